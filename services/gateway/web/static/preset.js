// GAZE preset pages: new images join the gallery live, thumbnails fall back to the full image, the
// import form loads a chosen file into its textarea. Plain JavaScript, no build step; needs gaze.js (and
// its TERMINAL, the job states that end a job).
"use strict";

(() => {

  function thumbUrl(relativePath, size = 512) {
    return `/thumbs/${size}/${relativePath.split("/").map(encodeURIComponent).join("/")}`;
  }

  // gaze.js dispatches gaze:job-finished from each [data-job-id] element when its job ends.
  function addToGallery(job) {
    const gallery = document.querySelector("[data-gallery]");
    const template = document.getElementById("gallery-item-template");
    const result = job.result;
    if (!gallery || !template || !result || !result.relative_path) return;
    if (job.preset && job.preset !== gallery.dataset.slug) return;
    // The page may already list it (the job finished between the two queries that built the page).
    const known = [...gallery.querySelectorAll("[data-image-job]")].some((el) => el.dataset.imageJob === job.id);
    if (known) return;

    const item = template.content.firstElementChild.cloneNode(true);
    item.dataset.imageJob = job.id;
    const link = item.querySelector(".gallery-thumb");
    link.href = result.image_url;
    const img = item.querySelector("img");
    img.dataset.full = result.image_url;
    if (result.width && result.height) { img.width = result.width; img.height = result.height; }
    img.alt = `${img.alt.replace(/, new image$/, "")}, seed ${result.seed}`;
    img.src = thumbUrl(result.relative_path);
    item.querySelector('[data-field="seed"]').textContent = String(result.seed);
    item.querySelector('[data-field="size"]').textContent = `${result.width}×${result.height}`;
    item.querySelector('input[name="relative_path"]').value = result.relative_path;
    gallery.prepend(item);
    for (const empty of document.querySelectorAll("[data-gallery-empty]")) empty.hidden = true;
    const counter = document.querySelector("[data-gallery-count]");
    if (counter && counter.dataset.offset === "0") {
      const n = gallery.querySelectorAll(".gallery-item").length;
      counter.textContent = `${n}${counter.textContent.includes("+") ? "+" : ""} image${n === 1 ? "" : "s"}`;
    }
  }

  function updateBatchSummary() {
    const summary = document.querySelector("[data-batch-summary]");
    const jobs = [...document.querySelectorAll("[data-batch] [data-job-id]")];
    if (!summary || !jobs.length) return;
    const finished = jobs.filter((el) => TERMINAL.has(el.dataset.status));
    const failed = finished.filter((el) => el.dataset.status === "failed").length;
    summary.textContent = finished.length === jobs.length
      ? `all ${jobs.length} finished${failed ? `, ${failed} failed` : ""}`
      : `${finished.length} of ${jobs.length} finished`;
  }

  document.addEventListener("gaze:job-finished", (event) => {
    if (event.detail && event.detail.status === "done") addToGallery(event.detail);
    updateBatchSummary();
  });

  // A thumbnail that cannot be served (not made yet, thumbnailer down) shows the full image instead.
  document.addEventListener("error", (event) => {
    const img = event.target;
    if (!(img instanceof HTMLImageElement) || !img.dataset.full || img.dataset.fellBack) return;
    img.dataset.fellBack = "1";
    img.src = img.dataset.full;
  }, true);

  // <input type="file" data-load-into="#textarea">: read the chosen file into the textarea.
  document.addEventListener("change", (event) => {
    const input = event.target.closest("[data-load-into]");
    if (!input || !input.files || !input.files.length) return;
    const target = document.querySelector(input.dataset.loadInto);
    const reader = new FileReader();
    reader.addEventListener("load", () => { target.value = reader.result; target.dispatchEvent(new Event("input")); });
    reader.addEventListener("error", () => { window.alert(`Could not read ${input.files[0].name}`); });
    reader.readAsText(input.files[0]);
  });

  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (event.defaultPrevented) return;
    // The import form posts urlencoded; refuse locally what the server would refuse (413) anyway.
    if (form.matches("[data-import]")) {
      const limit = Number(form.dataset.maxBytes);
      const size = new URLSearchParams(new FormData(form)).toString().length;
      const message = form.querySelector("[data-import-message]");
      if (limit && size > limit) {
        event.preventDefault();
        if (message) {
          message.hidden = false;
          message.textContent = `This import is ${Math.ceil(size / 1024)} KiB once encoded; ` +
            `the limit is ${Math.floor(limit / 1024)} KiB. Split it into smaller files.`;
        }
        return;
      }
    }
    // One click, one batch: a double click must not queue the images twice.
    if (form.matches("[data-generate], [data-import]")) {
      const button = form.querySelector('button[type="submit"]');
      if (button) setTimeout(() => { button.disabled = true; }, 0);
    }
  });

  // Coming back with the back button (page cache) must not leave the form's button disabled.
  window.addEventListener("pageshow", () => {
    for (const button of document.querySelectorAll("form[data-generate] button, form[data-import] button")) {
      button.disabled = false;
    }
  });

  document.addEventListener("DOMContentLoaded", updateBatchSummary);
})();
