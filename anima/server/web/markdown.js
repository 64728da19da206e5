// A small markdown renderer for replies: paragraphs, headings, lists, quotes, fenced and
// inline code, bold, italics and http(s) links. The text is HTML-escaped first, so any
// HTML in a reply is shown as text, never run.

const escapeHTML = (s) =>
  s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;").replace(/'/g, "&#39;");

const FENCE = /^\s*```\s*([\w+#.-]*)\s*$/;
const ITEM = /^\s*([-*+]|\d+[.)])\s+/;
const HEADING = /^(#{1,6})\s+(.*)$/;
const QUOTE = /^&gt;\s?/;

function inline(text) {
  const codes = []; // inline code is set aside first: nothing inside it is formatted
  text = text.replace(/`([^`\n]+)`/g, (_, code) => `\u0000${codes.push(code) - 1}\u0000`);
  text = text
    .replace(/\*\*(\S(?:.*?\S)?)\*\*/g, "<strong>$1</strong>")
    .replace(/__(\S(?:.*?\S)?)__/g, "<strong>$1</strong>")
    .replace(/(^|[^*\w])\*(\S(?:[^*]*?\S)?)\*(?![*\w])/g, "$1<em>$2</em>")
    .replace(/(^|[^_\w])_(\S(?:[^_]*?\S)?)_(?![_\w])/g, "$1<em>$2</em>")
    .replace(/\[([^\]]+)\]\((https?:\/\/[^\s)]+)\)/g, '<a href="$2" target="_blank" rel="noopener noreferrer">$1</a>');
  return text.replace(/\u0000(\d+)\u0000/g, (_, i) => `<code>${codes[Number(i)]}</code>`);
}

function startsBlock(line) {
  return FENCE.test(line) || ITEM.test(line) || HEADING.test(line) || QUOTE.test(line);
}

export function markdown(source) {
  const lines = escapeHTML(source.replace(/\u0000/g, "").replace(/\r\n?/g, "\n")).split("\n");
  const out = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    const fence = line.match(FENCE);
    if (fence) {
      const code = [];
      for (i++; i < lines.length && !/^\s*```\s*$/.test(lines[i]); i++) code.push(lines[i]);
      i++; // the closing fence, or the end of a reply still streaming
      const label = fence[1] ? ` data-lang="${fence[1]}"` : "";
      out.push(`<pre${label}><code>${code.join("\n")}</code></pre>`);
    } else if (!line.trim()) {
      i++;
    } else if (HEADING.test(line)) {
      const [, hashes, text] = line.match(HEADING);
      const level = Math.min(hashes.length + 2, 6); // the page has h1 and h2 already
      out.push(`<h${level}>${inline(text)}</h${level}>`);
      i++;
    } else if (ITEM.test(line)) {
      const tag = /^\s*\d/.test(line) ? "ol" : "ul";
      const items = [];
      for (; i < lines.length && (ITEM.test(lines[i]) || (/^\s{2,}\S/.test(lines[i]) && items.length)); i++) {
        if (ITEM.test(lines[i])) items.push(lines[i].replace(ITEM, ""));
        else items[items.length - 1] += " " + lines[i].trim(); // an indented continuation
      }
      out.push(`<${tag}>${items.map((t) => `<li>${inline(t)}</li>`).join("")}</${tag}>`);
    } else if (QUOTE.test(line)) {
      const quoted = [];
      for (; i < lines.length && QUOTE.test(lines[i]); i++) quoted.push(lines[i].replace(QUOTE, ""));
      out.push(`<blockquote>${inline(quoted.join("\n")).replace(/\n/g, "<br>")}</blockquote>`);
    } else {
      const para = [];
      for (; i < lines.length && lines[i].trim() && !(para.length && startsBlock(lines[i])); i++) para.push(lines[i]);
      out.push(`<p>${inline(para.join("\n")).replace(/\n/g, "<br>")}</p>`);
    }
  }
  return out.join("");
}
