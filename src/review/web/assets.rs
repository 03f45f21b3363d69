//! The page's one stylesheet and one small script (served by the service itself: no CDN, no
//! build step).

pub const CSS: &str = r#"
body { font-family: "Noto Sans CJK SC", "PingFang SC", "Microsoft YaHei", sans-serif; margin: 0; color: #1d2430; background: #f5f6f8; }
header { background: #1d3557; color: #fff; padding: 10px 20px; display: flex; gap: 18px; align-items: center; }
header a { color: #fff; }
header button { color: #fff; background: transparent; border: 1px solid #fff; border-radius: 3px; padding: 2px 10px; cursor: pointer; }
header .spacer { flex: 1; }
main { padding: 16px 20px; }
table { border-collapse: collapse; width: 100%; background: #fff; }
th, td { border-bottom: 1px solid #e1e4ea; padding: 6px 8px; text-align: left; font-size: 14px; vertical-align: top; }
tr.sel { background: #fff3c4; }
tr.row:hover { background: #eef3fb; cursor: pointer; }
form.filters { display: flex; flex-wrap: wrap; gap: 10px; align-items: end; background: #fff; padding: 10px; margin-bottom: 12px; }
form.filters label { display: flex; flex-direction: column; font-size: 12px; }
.badge { display: inline-block; padding: 2px 8px; border-radius: 10px; font-size: 12px; }
.st-pending { background: #e1e4ea; } .st-one_approval { background: #ffe8a3; } .st-approved { background: #b7e4c7; }
.st-rejected { background: #f4b6b6; } .st-reminder { background: #cfe2ff; }
.st-enforcement { background: #b7e4c7; } .st-advisory { background: #e1e4ea; } .badge { white-space: nowrap; }
.verified { background: #2d6a4f; color: #fff; padding: 10px; font-weight: bold; }
.failed { background: #b00020; color: #fff; padding: 10px; font-weight: bold; }
.cols { display: grid; grid-template-columns: minmax(0, 3fr) minmax(0, 2fr); gap: 16px; }
video, img.shot { max-width: 100%; background: #000; }
section { background: #fff; padding: 10px 14px; margin-bottom: 14px; }
.decide button { margin-right: 8px; padding: 6px 14px; }
.muted { color: #6b7280; font-size: 12px; }
.err { color: #b00020; }
.state { font-weight: bold; color: #fff; } .s-up { background: #2d6a4f; } .s-down { background: #b00020; }
.s-starting { background: #b08900; } .s-unknown { background: #6b7280; }
tr.cam[data-state=down] { background: #fde2e2; }
"#;

pub const JS: &str = r#"
(function () {
  var rows = Array.prototype.slice.call(document.querySelectorAll('tr.row'));
  var i = rows.length ? 0 : -1;
  function sel(k) { rows.forEach(function (r) { r.classList.remove('sel'); }); if (k >= 0 && rows[k]) { rows[k].classList.add('sel'); rows[k].scrollIntoView({block: 'nearest'}); } }
  sel(i);
  rows.forEach(function (r) { r.addEventListener('click', function () { location.href = r.dataset.href; }); });
  document.addEventListener('keydown', function (e) {
    var t = e.target.tagName;
    if (t === 'INPUT' || t === 'TEXTAREA' || t === 'SELECT') { if (e.key === 'Escape') e.target.blur(); return; }
    if (rows.length) {
      if (e.key === 'j') { i = Math.min(i + 1, rows.length - 1); sel(i); }
      if (e.key === 'k') { i = Math.max(i - 1, 0); sel(i); }
      if (e.key === 'Enter' && rows[i]) { location.href = rows[i].dataset.href; }
    }
    if (e.key === '/') { var f = document.querySelector('form.filters input, form.filters select'); if (f) { e.preventDefault(); f.focus(); } }
    var d = document.getElementById('decision');
    if (d) {
      var pick = { a: 'approve', r: 'reject', m: 'reminder' }[e.key];
      if (pick) { var b = d.querySelector('button[value=' + pick + ']'); if (b) { e.preventDefault(); b.focus(); } }
      if (e.key === 'Escape') { location.href = '/queue'; }
    }
  });
  var ops = document.getElementById('ops');
  if (ops) {
    var texts = document.getElementById('ops-texts').dataset;
    var num = function (v) { return v === null || v === undefined ? '\u2013' : v.toFixed(1); };
    var refresh = function () {
      fetch('/api/ops/cameras', {credentials: 'same-origin'}).then(function (r) { return r.ok ? r.json() : null; }).then(function (cams) {
        if (!cams) return;
        cams.forEach(function (c) {
          var tr = ops.querySelector('tr.cam[data-camera="' + c.camera + '"]');
          if (!tr) return;
          tr.dataset.state = c.state;
          var b = tr.querySelector('.state');
          b.className = 'badge state s-' + c.state;
          b.textContent = texts[c.state] || c.state;
          tr.querySelector('.conditions').textContent = c.conditions.join(', ');
          tr.querySelector('.analysed').textContent = num(c.analysed_fps);
          tr.querySelector('.dropped').textContent = num(c.dropped_fps);
          tr.querySelector('.inference').textContent = num(c.inference_ms);
          tr.querySelector('.worker').textContent = c.worker || '\u2013';
          if (c.last_violation_utc) tr.querySelector('.last').textContent = new Date(c.last_violation_utc).toLocaleString();
          tr.querySelector('.detail').textContent = c.detail;
        });
      }).catch(function () {});
    };
    setInterval(refresh, 1000);
  }
  var form = document.getElementById('decision');
  if (form) {
    form.addEventListener('submit', function (e) {
      var b = e.submitter;
      var reason = form.querySelector('textarea[name=reason]');
      if (b && b.value === 'reject' && reason && !reason.value.trim()) { e.preventDefault(); reason.focus(); reason.classList.add('err'); }
    });
  }
})();
"#;
