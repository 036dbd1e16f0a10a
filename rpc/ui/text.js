// Plain helpers of the dashboard's views: what the form's text fields mean (KEY=VALUE lines, lists, a command
// line split as a shell would) and how sizes are shown. No DOM, no network.
'use strict';

(function () {
  function debounce(fn, ms) {
    let timer = null;
    return () => {
      clearTimeout(timer);
      timer = setTimeout(fn, ms);
    };
  }

  function bytes(n) {
    if (n === null || n === undefined) return '?';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) {
      n /= 1024;
      i += 1;
    }
    return (i ? n.toFixed(1) : String(n)) + ' ' + units[i];
  }

  function pairs(text) {
    const out = {};
    for (const part of (text || '').split(/[\n,]/)) {
      const item = part.trim();
      if (!item) continue;
      const eq = item.indexOf('=');
      if (eq <= 0) throw new Error('"' + item + '" is not KEY=VALUE');
      out[item.slice(0, eq).trim()] = item.slice(eq + 1);
    }
    return out;
  }

  function list(text) {
    return (text || '').split(/[\n,]/).map((s) => s.trim()).filter((s) => s);
  }

  // A command line split as a shell would for plain words, 'single' and "double" quotes and backslashes.
  function words(text) {
    const out = [];
    let word = null;
    let quote = null;
    for (let i = 0; i < text.length; i++) {
      const c = text[i];
      if (quote) {
        if (c === quote) quote = null;
        else if (c === '\\' && quote === '"' && i + 1 < text.length) word += text[++i];
        else word += c;
      } else if (c === "'" || c === '"') {
        quote = c;
        word = word === null ? '' : word;
      } else if (c === '\\' && i + 1 < text.length) {
        word = (word === null ? '' : word) + text[++i];
      } else if (/\s/.test(c)) {
        if (word !== null) out.push(word);
        word = null;
      } else {
        word = (word === null ? '' : word) + c;
      }
    }
    if (quote) throw new Error('the command has an unclosed ' + quote);
    if (word !== null) out.push(word);
    return out;
  }

  window.cmnode = Object.assign(window.cmnode || {}, { debounce, bytes, pairs, list, words });
})();
