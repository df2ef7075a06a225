// Server-sent events read from a fetch body. EventSource cannot POST or send an Authorization header, so
// the console reads the stream itself: text arrives in arbitrary pieces, events end at a blank line, and
// each has an `event:` name and one or more `data:` lines (joined with newlines, as the spec says).

export class SseParser {
  constructor() {
    this.buffer = "";
  }

  // Feed a decoded piece of the body; returns the events it completed, as {kind, data} (data parsed as JSON).
  push(text) {
    this.buffer += text.replace(/\r\n?/g, "\n");
    const events = [];
    let end;
    while ((end = this.buffer.indexOf("\n\n")) >= 0) {
      const block = this.buffer.slice(0, end);
      this.buffer = this.buffer.slice(end + 2);
      const event = parseBlock(block);
      if (event) events.push(event);
    }
    return events;
  }
}

function parseBlock(block) {
  let kind = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue; // a comment (keep-alive)
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") kind = value;
    else if (field === "data") data.push(value);
  }
  if (data.length === 0) return null;
  const raw = data.join("\n");
  try {
    return { kind, data: JSON.parse(raw) };
  } catch {
    return { kind, data: raw };
  }
}
