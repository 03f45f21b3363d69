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
      if (pick) { var b = d.querySelector('button[value=' + pick + ']'); if (b) { e.preventDefault(); b.focus(); hint(d, pick); } }
      if (e.key === 'Escape') { location.href = '/queue'; }
    }
  });
  // what a decision still needs, said beside the form before it is sent (the server says the same)
  function missing(form, decision) {
    if (decision === 'approve' && form.querySelectorAll('input[type=checkbox]:not(:checked)').length) return form.dataset.needChecks;
    if (decision === 'reject' && !form.querySelector('textarea[name=reason]').value.trim()) return form.dataset.needReason;
    return '';
  }
  function hint(form, decision) {
    var h = document.getElementById('decision-hint');
    if (h) h.textContent = missing(form, decision);
  }
  var decisionForm = document.getElementById('decision');
  if (decisionForm) {
    decisionForm.addEventListener('submit', function (e) {
      var why = missing(decisionForm, e.submitter ? e.submitter.value : '');
      if (why) { e.preventDefault(); hint(decisionForm, e.submitter.value); }
    });
    decisionForm.addEventListener('change', function () { var f = document.activeElement; hint(decisionForm, f && f.value); });
  }
  var ops = document.getElementById('ops');
  if (ops) {
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
          b.textContent = c.state_text;
          tr.querySelector('.conditions').textContent = c.conditions_text;
          tr.querySelector('.analysed').textContent = num(c.analysed_fps);
          tr.querySelector('.dropped').textContent = num(c.dropped_fps);
          tr.querySelector('.inference').textContent = num(c.inference_ms);
          tr.querySelector('.worker').textContent = c.worker || '\u2013';
          tr.querySelector('.last').textContent = c.last_violation || '\u2013';
          tr.querySelector('.detail').textContent = c.detail;
        });
      }).catch(function () {});
    };
    setInterval(refresh, 1000);
    // the camera grid: each picture again every 10 s; a camera without one says so
    var grid = document.getElementById('grid');
    if (grid) {
      var snaps = Array.prototype.slice.call(grid.querySelectorAll('figure.snap'));
      snaps.forEach(function (f) {
        var img = f.querySelector('img');
        img.addEventListener('load', function () { f.classList.remove('none'); f.dataset.loaded = '1'; });
        img.addEventListener('error', function () { f.classList.add('none'); f.dataset.loaded = '0'; });
        // (a picture that came or failed before this script ran)
        if (img.complete) { if (img.naturalWidth > 0) { f.dataset.loaded = '1'; } else { f.classList.add('none'); f.dataset.loaded = '0'; } }
      });
      setInterval(function () {
        snaps.forEach(function (f) {
          var img = f.querySelector('img');
          img.src = '/api/ops/snapshot/' + encodeURIComponent(f.dataset.camera) + '?grid=1&t=' + Date.now();
        });
      }, 10000);
      // the captions' state badges follow the table's
      setInterval(function () {
        snaps.forEach(function (f) {
          var tr = ops.querySelector('tr.cam[data-camera="' + f.dataset.camera + '"]');
          if (!tr) return;
          f.dataset.state = tr.dataset.state;
          var b = f.querySelector('.state'), tb = tr.querySelector('.state');
          b.className = tb.className; b.textContent = tb.textContent;
        });
      }, 1000);
    }
  }
  var editor = document.getElementById('editor');
  if (editor) {
    var model = JSON.parse(editor.dataset.model), words = JSON.parse(editor.dataset.words || '{}');
    var svg = document.getElementById('draw'), img = document.getElementById('frame');
    var msg = document.getElementById('msg'), list = document.getElementById('polys');
    var target = document.getElementById('target'), NS = 'http://www.w3.org/2000/svg';
    var sets = { mask: (model.mask || []).map(function (p) { return { name: p.name, points: p.points }; }) };
    model.zones.forEach(function (z) { sets['zone:' + z.rule] = z.points ? [{ name: z.rule + '.zone', points: z.points }] : []; });
    var open = null, selected = -1, drag = null, moved = false, W = 1, H = 1;
    var say = function (t, bad) { msg.textContent = t; msg.className = bad ? 'err' : ''; };
    var norm = function (e) {
      var r = svg.getBoundingClientRect();
      var c = function (v) { return Math.round(Math.min(1, Math.max(0, v)) * 10000) / 10000; };
      return [c((e.clientX - r.left) / r.width), c((e.clientY - r.top) / r.height)];
    };
    var pts = function (p) { return p.map(function (q) { return (q[0] * W) + ',' + (q[1] * H); }).join(' '); };
    var el = function (name, attrs) { var n = document.createElementNS(NS, name); for (var k in attrs) n.setAttribute(k, attrs[k]); svg.appendChild(n); return n; };
    var render = function () {
      while (svg.firstChild) svg.removeChild(svg.firstChild);
      Object.keys(sets).forEach(function (key) {
        sets[key].forEach(function (p, i) {
          var mine = key === target.value;
          el('polygon', { points: pts(p.points), 'class': 'poly ' + (key === 'mask' ? 'mask' : 'zone') + (mine ? '' : ' other') + (mine && i === selected ? ' sel' : ''), 'data-index': i });
        });
      });
      sets[target.value].forEach(function (p, i) {
        p.points.forEach(function (q, j) { el('circle', { cx: q[0] * W, cy: q[1] * H, r: Math.max(W, H) / 160, 'class': 'vertex', 'data-poly': i, 'data-point': j }); });
      });
      if (open) {
        el('polyline', { points: pts(open), 'class': 'open' });
        open.forEach(function (q, j) { el('circle', { cx: q[0] * W, cy: q[1] * H, r: Math.max(W, H) / 160, 'class': 'vertex', 'data-open': j }); });
      }
      list.innerHTML = '';
      sets[target.value].forEach(function (p, i) {
        var li = document.createElement('li');
        li.textContent = (p.name || '#' + i) + ' \u00b7 ' + p.points.length + ' \u00b7 ' + p.points.map(function (q) { return '[' + q[0] + ', ' + q[1] + ']'; }).join(' ');
        if (i === selected) li.className = 'sel';
        li.addEventListener('click', function () { selected = i; render(); });
        list.appendChild(li);
      });
    };
    var close = function () {
      if (!open || open.length < 3) { if (open) say(words.need3, true); return; }
      var p = { name: '', points: open };
      if (target.value === 'mask') { sets.mask.push(p); selected = sets.mask.length - 1; }
      else { p.name = target.value.slice(5) + '.zone'; sets[target.value] = [p]; selected = 0; }
      open = null; render();
    };
    var frame = function () {
      var u = '/api/ops/snapshot/' + encodeURIComponent(model.camera) + '?t=' + Date.now() + (document.getElementById('unmasked').checked ? '&unmasked=1' : '');
      img.src = u;
    };
    img.addEventListener('load', function () {
      W = img.naturalWidth; H = img.naturalHeight;
      svg.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
      document.getElementById('frame-error').textContent = '';
      editor.dataset.loaded = img.src.indexOf('unmasked=1') >= 0 ? 'unmasked' : 'masked';
      render();
    });
    img.addEventListener('error', function () {
      editor.dataset.loaded = 'error';
      fetch(img.src, { credentials: 'same-origin' }).then(function (r) { return r.json(); }).then(function (j) {
        document.getElementById('frame-error').textContent = words.noPicture + (j.error ? ': ' + j.error : '');
      }).catch(function () { document.getElementById('frame-error').textContent = words.noPicture; });
    });
    svg.addEventListener('mousedown', function (e) {
      var t = e.target;
      moved = false;
      if (t.classList.contains('vertex')) {
        drag = t.dataset.open !== undefined ? { open: +t.dataset.open } : { poly: +t.dataset.poly, point: +t.dataset.point };
        moved = false; e.preventDefault();
      }
    });
    document.addEventListener('mousemove', function (e) {
      if (!drag) return;
      moved = true;
      var q = norm(e);
      if (drag.open !== undefined) open[drag.open] = q; else sets[target.value][drag.poly].points[drag.point] = q;
      render();
    });
    document.addEventListener('mouseup', function () { drag = null; });
    svg.addEventListener('click', function (e) {
      if (moved) { moved = false; return; }
      var t = e.target;
      if (t.classList.contains('vertex')) { if (t.dataset.open === '0' && open && open.length >= 3) close(); return; }
      if (t.classList.contains('poly') && !open && !t.classList.contains('other')) { selected = +t.dataset.index; render(); return; }
      open = open || [];
      open.push(norm(e));
      render();
    });
    target.addEventListener('change', function () { open = null; selected = -1; render(); });
    document.getElementById('close').addEventListener('click', close);
    document.getElementById('undo').addEventListener('click', function () { if (open) { open.pop(); if (!open.length) open = null; render(); } });
    var del = function () { if (selected >= 0) { sets[target.value].splice(selected, 1); selected = -1; render(); } };
    document.getElementById('delete').addEventListener('click', del);
    document.getElementById('reload').addEventListener('click', frame);
    document.getElementById('unmasked').addEventListener('change', frame);
    var post = function (url, body) {
      return fetch(url, { method: 'POST', credentials: 'same-origin', headers: { 'content-type': 'application/json', 'x-csrf-token': model.csrf }, body: JSON.stringify(body) })
        .then(function (r) { return r.json().then(function (j) { return { ok: r.ok, j: j }; }); });
    };
    var done = function (res) {
      if (!res.ok) { say(words.notSaved + (res.j.error ? ': ' + res.j.error : ''), true); msg.dataset.state = 'error'; return; }
      msg.dataset.state = 'saved';
      if (res.j.sha256) { msg.dataset.sha = res.j.sha256; document.getElementById('mask-sha').textContent = res.j.sha256; }
      if (res.j.source) document.getElementById('mask-source').textContent = res.j.source;
      document.getElementById('mask-text').textContent = res.j.text || '';
      say(words.savedBy + ' ' + res.j.by + ' (KV rev ' + res.j.revision + ')' + (res.j.sha256 ? ', sha256 ' + res.j.sha256 : '') + '; ' + words.apply);
      setTimeout(frame, 1500);
    };
    document.getElementById('save').addEventListener('click', function () {
      if (open && open.length >= 3) close();
      var reason = document.getElementById('reason').value;
      msg.dataset.state = 'saving';
      if (target.value === 'mask') {
        post('/api/ops/masks/' + encodeURIComponent(model.camera), { polygons: sets.mask, reason: reason }).then(done);
      } else {
        var z = sets[target.value][0];
        if (!z) { say(words.drawZone, true); return; }
        post('/api/ops/zones/' + encodeURIComponent(model.camera) + '/' + encodeURIComponent(target.value.slice(5)), { points: z.points, reason: reason }).then(done);
      }
    });
    document.getElementById('reset').addEventListener('click', function () {
      post('/api/ops/masks/' + encodeURIComponent(model.camera), { reset: true, reason: document.getElementById('reason').value }).then(done);
    });
    document.addEventListener('keydown', function (e) {
      var t = e.target.tagName;
      if (t === 'INPUT' || t === 'TEXTAREA' || t === 'SELECT') return;
      if (e.key === 'Enter') { e.preventDefault(); close(); }
      if (e.key === 'Backspace' && open) { e.preventDefault(); open.pop(); if (!open.length) open = null; render(); }
      if (e.key === 'Delete') del();
      if (e.key === 'Escape') { open = null; render(); }
    });
    render();
  }
  var form = document.getElementById('decision');
  if (form) {
    form.addEventListener('submit', function (e) {
      var b = e.submitter;
      var reason = form.querySelector('textarea[name=reason]');
      if (b && b.value === 'reject' && reason && !reason.value.trim()) { e.preventDefault(); reason.focus(); reason.classList.add('err'); }
    });
  }
  // "clip played" is logged when playback starts, not when the page loads the video's metadata
  var clip = document.getElementById('clip');
  if (clip && clip.dataset.played) {
    var sent = false;
    clip.addEventListener('play', function () {
      if (sent) return;
      sent = true;
      fetch(clip.dataset.played, { method: 'POST', credentials: 'same-origin', headers: { 'content-type': 'application/json', 'x-csrf-token': clip.dataset.csrf }, body: '{}' })
        .then(function (r) { clip.dataset.logged = r.ok ? 'yes' : 'no'; });
    });
  }
})();
