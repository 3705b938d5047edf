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

// What a job is doing, in a few words: its steps while it runs, its place in line while it waits.
function progressText(job) {
  if (job.status === "processing" && job.progress) return `${job.progress.value}/${job.progress.max}`;
  if (job.status === "pending" && job.queue_position !== null && job.queue_position !== undefined) {
    return job.queue_position === 0 ? "next in line" : `${job.queue_position} ahead`;
  }
  return "";
}

// A job's row shows its cancel button only while the job can still be cancelled.
function showCancel(el, status) {
  const button = el.querySelector("[data-cancel]");
  if (button) button.hidden = TERMINAL.has(status);
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
          if (progress) progress.textContent = progressText(job);
          showCancel(el, job.status);
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

// <button data-copy="#selector"> copies the text (or value) of the target; <button data-copy-text="...">
// copies that text (a job's full id where the page shows its first characters).
function copyButtons() {
  document.addEventListener("click", async (event) => {
    const button = event.target.closest("[data-copy], [data-copy-text]");
    if (!button) return;
    const target = button.dataset.copy ? document.querySelector(button.dataset.copy) : null;
    const text = target ? (target.value !== undefined ? target.value : target.textContent) : button.dataset.copyText;
    try {
      await navigator.clipboard.writeText(text.trim());
    } catch {
      if (target) {
        target.select && target.select();
        document.execCommand("copy");
      } else {
        window.prompt("Copy the text:", text);
      }
    }
    const label = button.textContent;
    button.textContent = "Copied";
    setTimeout(() => { button.textContent = label; }, 1500);
  });
}

// <button data-cancel="<job id>"> cancels that job (the API's cancel, behind the session).
function cancelButtons() {
  document.addEventListener("click", async (event) => {
    const button = event.target.closest("[data-cancel]");
    if (!button) return;
    button.disabled = true;
    try {
      const response = await fetch(`/ui/jobs/${encodeURIComponent(button.dataset.cancel)}/cancel`, {
        method: "POST", headers: { Accept: "application/json", "X-CSRF-Token": csrfToken() },
      });
      if (response.status !== 202 && response.status !== 409) throw new Error(`status ${response.status}`);
      const { job } = await response.json();
      for (const el of document.querySelectorAll(`[data-job-id="${CSS.escape(job.id)}"]`)) {
        el.dataset.status = job.status;
        const badge = el.querySelector(".status");
        if (badge) { badge.textContent = job.status; badge.className = `status status-${job.status}`; }
        const progress = el.querySelector(".job-progress");
        if (progress) progress.textContent = progressText(job);
        showCancel(el, job.status);
        el.dispatchEvent(new CustomEvent("gaze:job-finished", { bubbles: true, detail: job }));
      }
    } catch (err) {
      console.warn("cancel failed", err);
      button.disabled = false;
    }
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
  cancelButtons();
  confirmForms();
});
window.gaze = { fetchJobs, csrfToken, watchJobs, progressText, showCancel };
