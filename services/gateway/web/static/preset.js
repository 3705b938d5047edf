// GAZE preset pages: new images join the gallery live, the Generate form keeps its values across a
// submit, thumbnails fall back to the full image, the import form loads a chosen file into its textarea.
// Plain JavaScript, no build step; needs gaze.js (and its TERMINAL, the job states that end a job).
"use strict";

(() => {

  // gaze.js dispatches gaze:job-finished from each [data-job-id] element when its job ends. The images
  // that finished are fetched as the page renders them (/presets/<slug>/gallery: the same template, with
  // prompt, seed and checkpoint) and those the gallery lacks are added on top. Finishes close together
  // share one request.
  let refreshing = null;
  let finished = 0;
  function refreshGallery() {
    finished += 1;
    if (refreshing) return;
    refreshing = setTimeout(async () => {
      const limit = Math.min(60, finished + 5);   // every image done meanwhile, and a few from elsewhere
      refreshing = null;
      finished = 0;
      try {
        await addNewImages(limit);
      } catch (err) {
        console.warn("gallery refresh failed", err);
      }
    }, 250);
  }

  async function addNewImages(limit) {
    const gallery = document.querySelector("[data-gallery]");
    const counter = document.querySelector("[data-gallery-count]");
    // only the first page of the gallery shows the newest images
    if (!gallery || (counter && counter.dataset.offset !== "0")) return;
    const response = await fetch(`/presets/${encodeURIComponent(gallery.dataset.slug)}/gallery?limit=${limit}`,
                                 { headers: { Accept: "text/html" } });
    if (!response.ok) throw new Error(`status ${response.status}`);
    const parsed = document.createElement("template");
    parsed.innerHTML = await response.text();
    const known = new Set([...gallery.querySelectorAll("[data-image-job]")].map((el) => el.dataset.imageJob));
    // newest first: prepend the oldest new one first, so that the newest ends on top
    const fresh = [...parsed.content.querySelectorAll("[data-image-job]")].filter((el) => !known.has(el.dataset.imageJob));
    for (const item of fresh.reverse()) {
      item.classList.add("is-new");
      gallery.prepend(item);
    }
    if (!fresh.length) return;
    for (const empty of document.querySelectorAll("[data-gallery-empty]")) empty.hidden = true;
    if (counter) {
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
    if (event.detail && event.detail.status === "done") refreshGallery();
    updateBatchSummary();
  });

  // The Generate form keeps its values across its submit (the answer is a fresh page, whose form would
  // show the defaults again): they are kept for the preset in this tab's sessionStorage and put back when
  // the page loads, unless the server already shows them (a refused form). Reset goes back to the defaults.
  const KEPT = "gaze.generate.";
  const keptKey = (form) => KEPT + form.dataset.slug;
  const controls = (form) => [...form.elements].filter((el) => el.name && el.name !== "csrf_token" && el.type !== "file");

  function keepValues(form) {
    try {
      sessionStorage.setItem(keptKey(form), JSON.stringify(Object.fromEntries(controls(form).map((el) => [el.name, el.value]))));
    } catch (err) {
      console.warn("could not keep the form's values", err);   // storage full or disabled: nothing kept
    }
  }

  function restoreValues(form) {
    let kept = null;
    try { kept = JSON.parse(sessionStorage.getItem(keptKey(form)) || "null"); } catch { kept = null; }
    if (!kept || form.querySelector('[aria-invalid="true"]')) return;
    for (const el of controls(form)) {
      if (!(el.name in kept)) continue;
      if (el.tagName === "SELECT" && ![...el.options].some((option) => option.value === kept[el.name])) continue;
      el.value = kept[el.name];
    }
  }

  document.addEventListener("click", (event) => {
    const button = event.target.closest("[data-generate-reset]");
    if (!button) return;
    const form = button.closest("form");
    try { sessionStorage.removeItem(keptKey(form)); } catch { /* nothing kept */ }
    form.reset();
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
    if (form.matches("[data-generate]")) keepValues(form);
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

  document.addEventListener("DOMContentLoaded", () => {
    updateBatchSummary();
    for (const form of document.querySelectorAll("form[data-generate]")) restoreValues(form);
  });
})();
