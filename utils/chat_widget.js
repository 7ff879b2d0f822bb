// The browser half of utils.chat_widget.ChatWidget: draws the chat and sends what the user does to Python.
// model.get(...) reads what Python set (messages, reply, writing, status, prompt); model.send(...) sends a message.

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function render({ model, el: root }) {
  const log = el("div", "chat-log");
  const input = el("textarea", "chat-input");
  input.rows = 2;
  input.placeholder = "Type a message: Enter sends, Shift+Enter starts a new line";
  const send = el("button", "chat-button chat-send", "Send");
  const stop = el("button", "chat-button", "Stop");
  const fresh = el("button", "chat-button", "New chat");
  const status = el("div", "chat-status");
  const hint = el("div", "chat-hint",
    "Stop ends a reply: the toolbar's interrupt does not reach it (the reply is written in a thread).");
  const toggle = el("label", "chat-toggle");
  const showPrompt = el("input");
  showPrompt.type = "checkbox";
  toggle.append(showPrompt, " show the prompt the model received");
  const prompt = el("pre", "chat-prompt");
  root.classList.add("chat-widget");
  const row = el("div", "chat-row");
  row.append(input, send, stop, fresh);
  root.append(log, row, status, hint, toggle, prompt);

  function bubble(role, text, stopped) {
    const item = el("div", `chat-msg chat-${role}`);
    item.append(el("span", "chat-who", role === "user" ? "You" : "Model"), el("span", "chat-text", text));
    if (stopped) item.append(el("span", "chat-stopped", " [stopped]"));
    return item;
  }

  function drawLog() {
    // follow the newest message, unless the user scrolled up to read
    const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    const items = model.get("messages").map((m) => bubble(m.role, m.text, m.stopped));
    if (model.get("writing")) items.push(bubble("assistant", model.get("reply") || "…"));
    log.replaceChildren(...items);
    if (atBottom || model.get("writing")) log.scrollTop = log.scrollHeight;
  }

  function drawState() {
    const writing = model.get("writing");
    send.disabled = writing;
    stop.disabled = !writing;
    status.textContent = model.get("status");
    prompt.textContent = model.get("prompt");
    prompt.style.display = showPrompt.checked ? "block" : "none";
  }

  function submit() {
    // the text goes out in the message itself, read now: a click cannot overtake the typing
    if (model.get("writing")) {
      status.textContent = "(a reply is still being written: wait, or press Stop)";
      return;
    }
    model.send({ type: "send", text: input.value });
    if (input.value.trim()) input.value = "";
  }

  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      submit();
    }
    event.stopPropagation(); // keys typed here are not JupyterLab's shortcuts
  });
  send.addEventListener("click", submit);
  stop.addEventListener("click", () => model.send({ type: "stop" }));
  fresh.addEventListener("click", () => model.send({ type: "new" }));
  showPrompt.addEventListener("change", drawState);
  for (const name of ["messages", "reply", "writing"]) model.on(`change:${name}`, drawLog);
  for (const name of ["writing", "status", "prompt"]) model.on(`change:${name}`, drawState);
  drawLog();
  drawState();
}

export default { render };
