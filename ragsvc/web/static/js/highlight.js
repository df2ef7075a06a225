// Which parts of a passage match the query: the query's words (three letters or more, case-insensitive,
// whole-word prefixes so "attention" also marks "attentional"), as text segments the caller renders.

const STOP_WORDS = new Set(["the", "and", "for", "are", "was", "what", "how", "does", "why", "who", "which",
  "with", "that", "this", "from", "into", "when", "where", "can", "its", "has", "have", "not", "you", "your"]);

export function queryTerms(query) {
  const words = (query.toLowerCase().match(/[\p{L}\p{N}_]+/gu) || [])
    .filter((w) => w.length >= 3 && !STOP_WORDS.has(w));
  return [...new Set(words)];
}

function escapeRegExp(text) {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

// [{text, match}] covering `text` in order; `match` is true for the highlighted pieces.
export function highlightSegments(text, query) {
  const terms = queryTerms(query);
  if (terms.length === 0) return [{ text, match: false }];
  const pattern = new RegExp(`(?<![\\p{L}\\p{N}_])(?:${terms.map(escapeRegExp).join("|")})[\\p{L}\\p{N}_]*`, "giu");
  const segments = [];
  let last = 0;
  for (const found of text.matchAll(pattern)) {
    if (found.index > last) segments.push({ text: text.slice(last, found.index), match: false });
    segments.push({ text: found[0], match: true });
    last = found.index + found[0].length;
  }
  if (last < text.length) segments.push({ text: text.slice(last), match: false });
  return segments;
}
