"""The view's stylesheet and its one script (no build step: served as they are).

The script is progressive enhancement: every page works without it. With it, a page follows
the store through server-sent events (``/events``) and swaps in its fresh ``<main>`` when the
rows it shows change, and buttons of actions ask once more before they post.
"""

from __future__ import annotations

CSS = """
:root { --fg:#1d232b; --mute:#5d6875; --line:#dde2e8; --bg:#fbfcfd; --accent:#2457c5;
  --ok:#1c7c3c; --bad:#b3261e; --warn:#9a6700; --wait:#6b4fbb; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
  color:var(--fg); background:var(--bg); }
header { display:flex; gap:1.2em; align-items:center; padding:.55em 1.2em;
  border-bottom:1px solid var(--line); background:#fff; position:sticky; top:0; z-index:2; }
header .brand { font-weight:700; color:var(--fg); text-decoration:none; letter-spacing:.02em; }
header nav a { margin-right:1em; }
header .jump input { width:22em; }
.live { margin-left:auto; font-size:12px; color:var(--mute); }
.live::before { content:"●"; margin-right:.3em; color:#aab2bd; }
.live.on::before { color:var(--ok); }
main { padding:1em 1.4em 3em; max-width:1400px; }
h1 { font-size:20px; margin:.3em 0 .6em; } h2 { font-size:16px; margin:1.4em 0 .5em; }
a { color:var(--accent); text-decoration:none; } a:hover { text-decoration:underline; }
code { font:13px ui-monospace, SFMono-Regular, Menlo, monospace; }
table { border-collapse:collapse; width:100%; background:#fff; }
th, td { text-align:left; padding:.28em .6em; border-bottom:1px solid var(--line);
  vertical-align:top; }
th { font-weight:600; color:var(--mute); font-size:12px; }
td.empty { color:var(--mute); font-style:italic; }
table.facts { width:auto; } table.facts td:first-child { color:var(--mute); }
.num { text-align:right; white-space:nowrap; font-variant-numeric:tabular-nums; }
.indent { color:#c4cad2; }
.state { display:inline-block; padding:0 .45em; border-radius:3px; font-size:12px;
  background:#eef1f4; color:var(--mute); white-space:nowrap; }
.s-resolved, .s-idle, .s-stopped { background:#e3f3e8; color:var(--ok); }
.s-rejected, .s-failed, .s-rejected-timedout { background:#fbe4e2; color:var(--bad); }
.s-rejected-canceled, .s-ending { background:#fdf0d5; color:var(--warn); }
.s-pending, .s-running { background:#e2ebfb; color:var(--accent); }
.s-waiting, .s-restarting { background:#ece6fa; color:var(--wait); }
.s-unhosted { background:#eef1f4; color:var(--mute); }
.ok { color:var(--ok); } .gone { color:var(--bad); }
.error { color:var(--bad); white-space:pre-wrap; }
.note { background:#fff8e1; border:1px solid #f3d98b; padding:.4em .8em; margin:.6em 1.4em; }
.summary, .legend, .cost { color:var(--mute); }
.legend { font-size:12px; }
form.filters { display:flex; gap:1em; flex-wrap:wrap; align-items:end; margin-bottom:.8em; }
form.filters label { display:flex; flex-direction:column; font-size:12px; color:var(--mute); }
input, select, button, .button { font:inherit; padding:.25em .5em; border:1px solid #c8ced6;
  border-radius:4px; background:#fff; color:var(--fg); }
button, .button { cursor:pointer; display:inline-block; }
button:hover, .button:hover { background:#f1f4f8; text-decoration:none; }
.danger { border-color:#e3a6a1; color:var(--bad); }
button.approve { border-color:#9bd0ab; color:var(--ok); }
button.reject { border-color:#e3a6a1; color:var(--bad); }
form.settle { display:inline; margin-right:.4em; }
details.custom { display:inline-block; font-size:12px; }
.actions { margin:.3em 0 1em; display:flex; gap:.6em; flex-wrap:wrap; }
pre { margin:.2em 0; padding:.5em .7em; background:#f5f7f9; border:1px solid var(--line);
  border-radius:4px; white-space:pre-wrap; word-break:break-word; max-height:28em; overflow:auto;
  font:12.5px/1.4 ui-monospace, SFMono-Regular, Menlo, monospace; }
ol.transcript { list-style:none; padding:0; margin:0; }
ol.transcript li.item { border:1px solid var(--line); border-left:4px solid #c8ced6;
  border-radius:4px; background:#fff; padding:.5em .8em; margin:.5em 0; }
li.k-input { border-left-color:#7a8794 !important; }
li.k-model { border-left-color:var(--accent) !important; }
li.k-tool { border-left-color:var(--ok) !important; }
li.k-agent { border-left-color:var(--wait) !important; }
li.k-promise { border-left-color:var(--warn) !important; }
.item .head { margin-bottom:.25em; } .item .kind { font-size:11px; text-transform:uppercase;
  color:var(--mute); letter-spacing:.05em; } .item .id { float:right; font-size:12px; }
.call { margin:.3em 0 0 .6em; } .call .id { color:var(--mute); font-size:12px; }
.said, .sub { margin:.3em 0 0 .6em; }
.waterfall { background:#fff; border-top:1px solid var(--line); font-size:12.5px; }
.wf-row { display:grid; grid-template-columns:minmax(12em, 26em) 8em 5.5em 5.5em 1fr;
  gap:.6em; align-items:center; padding:.08em .5em; border-bottom:1px solid var(--line); }
.wf-head { font-weight:600; color:var(--mute); font-size:12px; }
.wf-row .what { white-space:nowrap; overflow:hidden; text-overflow:ellipsis; }
.wf-chunk.lazy { content-visibility:auto; contain-intrinsic-size:auto 2300px; }
.lane { position:relative; height:10px; min-width:240px; }
.bar { position:absolute; top:1px; height:8px; background:#9db3e0; min-width:2px; }
.bar.k-step { background:#5b83d6; } .bar.k-message { background:#8e74d0; }
.bar.k-timer { background:#d0a73f; } .bar.k-promise { background:#d98b3a; }
.bar.s-rejected, .bar.s-rejected-timedout { background:var(--bad); }
.bar.s-rejected-canceled { background:#c9a65a; }
.bar.open { opacity:.5; outline:1px dashed #5b83d6; }
ol.transcript.long li.item { content-visibility:auto; contain-intrinsic-size:auto 90px; }
@media print { .wf-chunk.lazy, ol.transcript.long li.item { content-visibility:visible; } }
.forest td:first-child { white-space:nowrap; }
"""

BAR_STEPS = 200
"""The waterfall places its bars in this many steps of a run's span: classes ``x0``…``x199``
(where a bar starts) and ``w1``…``w200`` (how long it is), since no inline style may run."""

CSS += "".join(
    f".x{i}{{left:{i * 100 / BAR_STEPS:g}%}} .w{i + 1}{{width:{(i + 1) * 100 / BAR_STEPS:g}%}}\n"
    for i in range(BAR_STEPS)
)

JS = """
(function () {
  "use strict";
  var body = document.body;
  var live = document.getElementById("live");
  var watch = body.getAttribute("data-watch") || "*";
  var timer = null, busy = false, again = false;

  function typing() {
    var el = document.activeElement;
    var main = document.getElementById("main");
    return el && main && main.contains(el) && /^(INPUT|TEXTAREA|SELECT)$/.test(el.tagName);
  }

  function refresh() {
    if (busy || typing()) { again = true; return; }
    busy = true;
    fetch(location.href, {headers: {"X-Promissory-Partial": "1"},
                          credentials: "same-origin", cache: "no-store"})
      .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.text(); })
      .then(function (text) {
        var main = document.getElementById("main");
        var open = Array.prototype.map.call(main.querySelectorAll("details[open]"),
                                            function (d) { return d.id; });
        main.innerHTML = text;
        open.forEach(function (id) {
          var d = id && document.getElementById(id);
          if (d) { d.open = true; }
        });
        body.setAttribute("data-refreshed", String(Date.now()));
      })
      .catch(function () {})
      .then(function () { busy = false; if (again) { again = false; schedule(400); } });
  }

  function schedule(delay) {
    if (timer) { return; }
    timer = setTimeout(function () { timer = null; refresh(); }, delay || 120);
  }

  if (window.EventSource) {
    var since = body.getAttribute("data-since") || "";
    var events = new EventSource("/events?watch=" + encodeURIComponent(watch) +
                                 "&since=" + encodeURIComponent(since));
    events.addEventListener("change", function () { schedule(); });
    events.onopen = function () { live.classList.add("on"); live.textContent = "live"; };
    events.onerror = function () {
      live.classList.remove("on");
      live.textContent = "reconnecting";
    };
  }

  document.addEventListener("submit", function (e) {
    var form = e.target;
    var ask = form.getAttribute && form.getAttribute("data-confirm");
    if (ask && !window.confirm(ask)) { e.preventDefault(); }
  });
})();
"""
