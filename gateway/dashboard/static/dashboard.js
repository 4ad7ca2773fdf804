// tescape dashboard: live refresh by polling the page's JSON twin (/ui/live/...). No library.
"use strict";

function poll(url, everyMs, apply) {
  let stopped = false;
  async function tick() {
    if (stopped) return;
    try {
      const resp = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (resp.ok) {
        if (apply(await resp.json()) === false) stopped = true;
      }
    } catch (err) {
      // the server is restarting or the network blinked: try again on the next tick
    }
    if (!stopped) setTimeout(tick, document.hidden ? everyMs * 4 : everyMs);
  }
  setTimeout(tick, everyMs);
}

function followTasks(table) {
  const body = document.getElementById("task-rows");
  const note = document.getElementById("live-note");
  poll(table.dataset.live, 3000, (data) => {
    body.innerHTML = data.rows;
    if (note) note.textContent = "updated " + new Date().toLocaleTimeString();
  });
}

function followTask(root) {
  if (root.dataset.terminal === "true") return; // an ended task does not change any more
  poll(root.dataset.live, 2000, (data) => {
    for (const [name, html] of Object.entries(data.parts)) {
      const part = document.getElementById("part-" + name);
      if (part && part.innerHTML !== html) part.innerHTML = html;
    }
    scrollLogs();
    if (data.terminal) return false; // this poll brought the final state
  });
}

function scrollLogs() {
  const follow = document.getElementById("follow");
  if (follow && !follow.checked) return;
  document.querySelectorAll("#part-logs pre.log").forEach((pre) => { pre.scrollTop = pre.scrollHeight; });
}

document.addEventListener("DOMContentLoaded", () => {
  scrollLogs();
  const tasks = document.getElementById("tasks");
  if (tasks && tasks.dataset.live) followTasks(tasks);
  const task = document.getElementById("task");
  if (task && task.dataset.live) followTask(task);
});
