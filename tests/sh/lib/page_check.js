// page_check.js: injected at the top of a copy of a run's index.html by test_page.sh; after
// the page has loaded (and its media had time to load), writes a JSON report into
// a pre element (id page-check) at the end of the body, for chromium --dump-dom:
//   errors      script errors and resources that failed to load (console-visible errors)
//   images      per <img>: src, loaded (complete with a natural width)
//   audio       per <audio>: src, readyState, duration
//   contrast    per text element (body text, links, lyrics, table cells): WCAG 2 contrast
//               of its computed colour against the first opaque background behind it
(function () {
  const errors = [];
  window.addEventListener('error', function (e) {
    const t = e.target;
    if (t && t !== window && (t.src || t.href)) errors.push('failed to load ' + (t.src || t.href));
    else errors.push('script error: ' + e.message);
  }, true);
  window.addEventListener('unhandledrejection', function (e) { errors.push('rejection: ' + e.reason); });
  const origError = console.error;
  console.error = function () { errors.push('console.error: ' + Array.from(arguments).join(' ')); origError.apply(console, arguments); };

  function rgba(s) {
    const m = s.match(/rgba?\(([^)]+)\)/);
    if (!m) return [0, 0, 0, 0];
    const p = m[1].split(/[ ,\/]+/).filter(Boolean).map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
  }
  function lum(c) {
    const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]);
  }
  function background(el) {
    for (let e = el; e; e = e.parentElement) {
      const c = rgba(getComputedStyle(e).backgroundColor);
      if (c[3] >= 0.99) return c;
    }
    return [255, 255, 255, 1];   // the canvas default
  }
  function contrast(el) {
    const fg = rgba(getComputedStyle(el).color), bg = background(el);
    const a = fg[3];   // blend a translucent text colour over its background
    const mix = [0, 1, 2].map(i => fg[i] * a + bg[i] * (1 - a));
    const l1 = lum(mix), l2 = lum(bg);
    return (Math.max(l1, l2) + 0.05) / (Math.min(l1, l2) + 0.05);
  }
  function report() {
    const out = {errors: errors, images: [], audio: [], contrast: []};
    document.querySelectorAll('img').forEach(i => out.images.push(
      {src: i.getAttribute('src'), loaded: i.complete && i.naturalWidth > 0}));
    document.querySelectorAll('audio').forEach(a => out.audio.push(
      {src: a.getAttribute('src'), readyState: a.readyState, duration: a.duration,
       error: a.error ? a.error.code : 0}));
    document.querySelectorAll('h1, h2, p, a, td, th, pre, span, b').forEach(el => {
      if (!el.textContent.trim() || el.closest('#page-check')) return;
      out.contrast.push({tag: el.tagName.toLowerCase(), cls: el.className,
                         text: el.textContent.trim().slice(0, 30),
                         ratio: Math.round(contrast(el) * 100) / 100});
    });
    const pre = document.createElement('pre');
    pre.id = 'page-check';
    pre.textContent = JSON.stringify(out);
    document.body.appendChild(pre);
  }
  // Audio metadata loads after 'load'; wait until every element has it, or 3 s.
  window.addEventListener('load', function () {
    const t0 = Date.now();
    (function poll() {
      const pending = Array.from(document.querySelectorAll('audio')).some(a => a.readyState < 1 && !a.error);
      if (pending && Date.now() - t0 < 3000) setTimeout(poll, 50); else report();
    })();
  });
})();
