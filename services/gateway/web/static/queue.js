// GAZE queue page: new jobs appear at the top without a reload, and every row follows its job.
// gaze.js's watchJobs() keeps pending rows' status current; this script polls the newest jobs (of the
// page's status filter) every 2 s, inserts rows for jobs it has not seen, and refreshes the rest from the
// same answer (attempts, replica and the finished image, which watchJobs does not touch). The server
// answers in the page's order (newest batch first, a batch's jobs in the order they were made), which
// the new rows keep. Every 5 s it also replaces the farm section (jobs waiting per checkpoint, the
// generator replicas' models and loads) with the server's current one (/queue?part=farm, HTML the server
// escaped). Loaded by queue.html only, after gaze.js, whose TERMINAL (the job states that end a job) it uses.
"use strict";

(() => {
  const POLL_MS = 2000;
  const FARM_POLL_MS = 5000;
  const THUMB_SIZE = 256;

  const table = document.getElementById("queue");
  const template = document.getElementById("queue-row-template");
  if (!table || !template) return;
  const body = table.tBodies[0];
  const size = Number(table.dataset.size) || 100;
  const status = table.dataset.status && table.dataset.status !== "all" ? table.dataset.status : "";

  const thumbUrl = (path) => `/thumbs/${THUMB_SIZE}/${path.split("/").map(encodeURIComponent).join("/")}`;
  const rowFor = (id) => body.querySelector(`tr[data-job-id="${CSS.escape(id)}"]`);

  function showTime(el, seconds) {
    if (seconds !== undefined && seconds !== null) el.dateTime = new Date(seconds * 1000).toISOString();
    if (!el.dateTime) return;
    const moment = new Date(el.dateTime);
    el.title = el.textContent.trim() || moment.toISOString();
    el.textContent = moment.toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" });
  }

  function showImage(row, job) {
    const link = row.querySelector(".job-thumb");
    const path = job.status === "done" && job.result && job.result.relative_path;
    if (!link || !path || link.querySelector("img")) return;
    link.href = job.result.image_url || `/static/uploads/${path}`;
    const img = document.createElement("img");
    img.src = thumbUrl(path);
    img.alt = `Image of job ${job.id}`;
    img.loading = "lazy";
    link.append(img);
    link.hidden = false;
  }

  function update(row, job) {
    const was = row.dataset.status;
    row.dataset.status = job.status;
    const badge = row.querySelector(".status");
    if (badge) { badge.textContent = job.status; badge.className = `status status-${job.status}`; }
    row.querySelector(".job-error").textContent = job.error || "";
    row.querySelector(".job-progress").textContent = window.gaze.progressText(job);
    window.gaze.showCancel(row, job.status);
    row.querySelector(".job-attempts").textContent = job.attempts ?? "";
    row.querySelector(".job-replica").textContent = job.replica || "";
    showImage(row, job);
    if (was !== job.status && TERMINAL.has(job.status)) {
      row.dispatchEvent(new CustomEvent("gaze:job-finished", { bubbles: true, detail: job }));
    }
  }

  function newRow(job) {
    const row = template.content.querySelector("tr").cloneNode(true);
    row.dataset.jobId = job.id;
    row.dataset.status = job.status;
    row.querySelector("[data-cancel]").dataset.cancel = job.id;
    const id = row.querySelector(".job-id");
    id.textContent = job.id.slice(0, 8);
    id.title = job.id;
    const copy = row.querySelector("[data-copy-text]");
    copy.dataset.copyText = job.id;
    copy.setAttribute("aria-label", `Copy the job id ${job.id}`);
    row.querySelector(".job-label").textContent = job.label || "";
    const preset = row.querySelector(".job-preset");
    preset.textContent = job.preset || "";
    if (job.preset) preset.href = `/presets/${encodeURIComponent(job.preset)}`;
    showTime(row.querySelector(".job-created"), job.created_at);
    update(row, job);
    return row;
  }

  function setEmpty(empty) {
    document.querySelector(".queue-empty")?.toggleAttribute("hidden", !empty);
    document.querySelector(".queue-wrap")?.toggleAttribute("hidden", empty);
  }

  async function poll() {
    if (!document.hidden) {
      try {
        const query = new URLSearchParams({ recent: String(size) });
        if (status) query.set("status", status);
        const jobs = await window.gaze.fetchJobs(query.toString());
        // Each new job goes just above the row of the job the answer lists after it: new batches on
        // top, in the server's order (the last one listed, with no row after it, at the end).
        let next = null;
        for (const job of [...jobs].reverse()) {
          let row = rowFor(job.id);
          if (row) {
            update(row, job);
          } else {
            row = newRow(job);
            row.classList.add("job-new");
            body.insertBefore(row, next);
          }
          next = row;
        }
        while (body.rows.length > size) body.lastElementChild.remove();
        setEmpty(body.rows.length === 0);
      } catch (err) {
        console.warn("queue poll failed", err);
      }
    }
    setTimeout(poll, POLL_MS);
  }

  // watchJobs may see a job finish first: show its image at once rather than on the next poll.
  document.addEventListener("gaze:job-finished", (event) => {
    const row = event.target.closest && event.target.closest("tr[data-job-id]");
    if (row && body.contains(row)) showImage(row, event.detail);
  });

  async function pollFarm() {
    if (!document.hidden) {
      try {
        const response = await fetch("/queue?part=farm", { headers: { Accept: "text/html" }, credentials: "same-origin" });
        // a redirect is the login page (the session ended): keep what is shown
        if (response.ok && !response.redirected) {
          const fresh = new DOMParser().parseFromString(await response.text(), "text/html").getElementById("farm");
          const shown = document.getElementById("farm");
          if (fresh && shown) shown.replaceWith(document.adoptNode(fresh));
        }
      } catch (err) {
        console.warn("farm poll failed", err);
      }
    }
    setTimeout(pollFarm, FARM_POLL_MS);
  }

  for (const el of body.querySelectorAll("time.job-created")) showTime(el);
  setTimeout(poll, POLL_MS);
  setTimeout(pollFarm, FARM_POLL_MS);
})();
