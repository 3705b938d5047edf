// GAZE web UI: live job status and small conveniences. Plain JavaScript, no build step.
"use strict";

// The job states as the server defines them (shared/job_states.py, rendered into every page by base.html);
// queue.js and preset.js use these too.
const JOB_STATES = JSON.parse(document.getElementById("gaze-job-states").textContent);
const TERMINAL = new Set(JOB_STATES.terminal);

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

async function fetchJobs(query) {
  const response = await fetch(`/ui/jobs?${query}`, { headers: { Accept: "application/json" } });
  if (!response.ok) throw new Error(`status ${response.status}`);
  return (await response.json()).jobs;
}

// Any element with data-job-id (and optional data-status) shows that job's live status. When a job
// ends, a "gaze:job-finished" event carrying the job bubbles from its element, for pages to react.
function watchJobs() {
  const pending = () => [...document.querySelectorAll("[data-job-id]")]
    .filter((el) => !TERMINAL.has(el.dataset.status));
  async function tick() {
    const elements = pending();
    // nothing to watch now: check again later (a page may add rows), without a request
    if (!elements.length) { setTimeout(tick, 1000); return; }
    const ids = [...new Set(elements.map((el) => el.dataset.jobId))];
    try {
      for (const job of await fetchJobs(`ids=${ids.join(",")}`)) {
        for (const el of document.querySelectorAll(`[data-job-id="${job.id}"]`)) {
          const was = el.dataset.status;
          el.dataset.status = job.status;
          const badge = el.querySelector(".status");
          if (badge) { badge.textContent = job.status; badge.className = `status status-${job.status}`; }
          const error = el.querySelector(".job-error");
          if (error) error.textContent = job.error || "";
          const progress = el.querySelector(".job-progress");
          if (progress) progress.textContent = job.progress && job.status === "processing"
            ? `${job.progress.value}/${job.progress.max}` : "";
          if (was !== job.status && TERMINAL.has(job.status)) {
            el.dispatchEvent(new CustomEvent("gaze:job-finished", { bubbles: true, detail: job }));
          }
        }
      }
    } catch (err) {
      console.warn("job status poll failed", err);
    }
    setTimeout(tick, 1000);
  }
  tick();
}

// <button data-copy="#selector"> copies the text (or value) of the target.
function copyButtons() {
  document.addEventListener("click", async (event) => {
    const button = event.target.closest("[data-copy]");
    if (!button) return;
    const target = document.querySelector(button.dataset.copy);
    const text = target.value !== undefined ? target.value : target.textContent;
    try {
      await navigator.clipboard.writeText(text.trim());
    } catch {
      target.select && target.select();
      document.execCommand("copy");
    }
    const label = button.textContent;
    button.textContent = "Copied";
    setTimeout(() => { button.textContent = label; }, 1500);
  });
}

// <form data-confirm="question"> asks before submitting (deleting a preset, revoking a key).
function confirmForms() {
  document.addEventListener("submit", (event) => {
    const question = event.target.dataset && event.target.dataset.confirm;
    if (question && !window.confirm(question)) event.preventDefault();
  });
}

document.addEventListener("DOMContentLoaded", () => {
  watchJobs();
  copyButtons();
  confirmForms();
});
window.gaze = { fetchJobs, csrfToken, watchJobs };
