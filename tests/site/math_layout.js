// For the open page: display formulas whose equation number overlaps the formula ("overlaps"),
// formulas wider than their box with no scroll container ("hidden"), and text outside code and
// rendered math that still holds TeX delimiters ("raw"), and images that are not a numbered
// figure with a caption in words ("uncaptioned"). Used by test_browser.py.
const out = {overlaps: [], hidden: [], raw: [], uncaptioned: []};
const inter = (a, b) => a.left < b.right - 0.5 && b.left < a.right - 0.5 && a.top < b.bottom - 0.5 && b.top < a.bottom - 0.5;
document.querySelectorAll('.katex-display').forEach((disp, i) => {
  const tag = disp.querySelector('.katex-tag');
  const html = disp.querySelector('.katex-html');
  if (tag) {
    const t = tag.getBoundingClientRect();
    html.querySelectorAll(':scope > .katex-base').forEach(b => {
      const r = b.getBoundingClientRect();
      if (inter(t, r)) out.overlaps.push(i + ':' + tag.textContent);
    });
  }
  // content wider than the box must be scrollable (overflow auto on this or an ancestor)
  let el = disp, ok = false;
  const cw = html.scrollWidth;
  while (el && el !== document.body) {
    const st = getComputedStyle(el);
    if (el.clientWidth >= cw - 1) { ok = true; break; }
    if (['auto', 'scroll'].includes(st.overflowX)) { ok = true; break; }
    el = el.parentElement;
  }
  if (!ok) out.hidden.push(i + ':' + (tag ? tag.textContent : ''));
});
const art = document.querySelector('article');
const walker = document.createTreeWalker(art, NodeFilter.SHOW_TEXT);
let n;
while ((n = walker.nextNode())) {
  if (n.parentElement.closest('code, pre, .katex, script, style')) continue;
  const t = n.textContent;
  if (/\$|\\\(|\\\[/.test(t)) out.raw.push(t.trim().slice(0, 80));
}
art.querySelectorAll('img').forEach(img => {
  const cap = img.closest('figure.dn-figure')?.querySelector('figcaption');
  const label = cap?.querySelector('.dn-figure__label')?.textContent || '';
  const words = cap ? cap.textContent.replace(label, '').trim() : '';
  if (words.length < 12) out.uncaptioned.push(img.getAttribute('src'));
});
return out;
