// A WebSocket to /ws/<session> that reconnects with backoff and resumes what it follows by seq.

export class TraceSocket {
  constructor(sessionId, {onEvent, onStatus, resumeFrom}) {
    this.sessionId = sessionId;
    this.onEvent = onEvent;
    this.onStatus = onStatus || (() => {});
    this.resumeFrom = resumeFrom || (() => null); // () => {traceId, afterSeq} to resume after a reconnect
    this.backoff = 500;
    this.queue = [];
    this.subscriptions = new Map();
    this.closedByUs = false;
    this.connect();
  }

  url() {
    // protocol=2: every event type (step_started, think_delta, ...). Without it the server sends
    // only the original protocol's event types, for clients that know no others.
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    return `${scheme}://${location.host}/ws/${encodeURIComponent(this.sessionId)}?protocol=2`;
  }

  connect() {
    this.onStatus("connecting");
    const ws = new WebSocket(this.url());
    this.ws = ws;
    ws.onopen = () => {
      this.backoff = 500;
      this.onStatus("connected");
    };
    ws.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.event_type === "connection_established") this.established(message);
      this.onEvent(message);
    };
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this.onStatus(event.code >= 4000 ? `closed (${event.code})` : "reconnecting");
      if (this.closedByUs || event.code === 4001 || event.code === 4400) return;
      setTimeout(() => this.connect(), this.backoff);
      this.backoff = Math.min(this.backoff * 2, 8000);
    };
  }

  established(message) {
    // Resume: the trace we were following (or the session's running one) from our last seq.
    const resume = this.resumeFrom(message.data);
    if (resume && resume.traceId) this.rawSend({action: "subscribe_trace", trace_id: resume.traceId, after_seq: resume.afterSeq || 0});
    for (const [traceId, afterSeq] of this.subscriptions) {
      if (!resume || traceId !== resume.traceId) this.rawSend({action: "subscribe_trace", trace_id: traceId, after_seq: afterSeq()});
    }
    if (this.feed) this.rawSend({action: "subscribe_all"});
    for (const message of this.queue.splice(0)) this.rawSend(message);
  }

  rawSend(message) {
    this.ws.send(JSON.stringify(message));
  }

  send(message) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.rawSend(message);
    else this.queue.push(message);
  }

  follow(traceId, afterSeq) {
    this.subscriptions.set(traceId, afterSeq);
    this.send({action: "subscribe_trace", trace_id: traceId, after_seq: afterSeq()});
  }

  subscribeAll() {
    this.feed = true;
    this.send({action: "subscribe_all"});
  }

  drop() {
    // For tests and the "reconnect" button: close as a network drop would.
    this.ws.close();
  }
}

export function sessionId() {
  let id = sessionStorage.getItem("tracesite.session");
  if (!id) {
    id = "web-" + Math.random().toString(36).slice(2, 10) + Date.now().toString(36);
    sessionStorage.setItem("tracesite.session", id);
  }
  return id;
}
