// malsori's browser page: microphone (AudioWorklet, 16 kHz) or a file → websocket (sherpa-onnx's streaming protocol)
// → partial and final text. A token in this page's URL (?token=...) is passed on to the websocket.
"use strict";

const RATE = 16000;
const $ = (id) => document.getElementById(id);
const status = (text) => { $("status").textContent = text; };

let ws = null;        // the open websocket
let audio = null;     // { ctx, source, node, tracks } while the microphone runs
let finishing = false; // Done was sent: send no more audio

function socketUrl() {
  const token = new URLSearchParams(location.search).get("token");
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const query = new URLSearchParams({ sample_rate: String(RATE) });
  if (token) query.set("token", token);
  return `${proto}//${location.host}/?${query}`;
}

function showResult(r) {
  if (r.is_final) {
    $("partial").textContent = "";
    if (r.text) {
      const li = document.createElement("li");
      const text = document.createElement("span");
      text.className = "text";
      text.textContent = r.text;
      li.appendChild(text);
      const time = document.createElement("span");
      time.className = "time";
      time.textContent = `${r.start_time.toFixed(2)} s`;
      li.appendChild(time);
      $("finals").appendChild(li);
    }
  } else {
    $("partial").textContent = r.text;
  }
}

// Open a websocket; resolves once open. `onDone` runs after the server's "Done!" or a close.
function openSocket(onDone) {
  return new Promise((resolve, reject) => {
    const sock = new WebSocket(socketUrl());
    sock.binaryType = "arraybuffer";
    let finished = false;
    const finish = (why) => {
      if (finished) return;
      finished = true;
      ws = null;
      onDone(why);
    };
    sock.onopen = () => { ws = sock; finishing = false; resolve(sock); };
    sock.onerror = () => reject(new Error("cannot connect to the server"));
    sock.onmessage = (e) => {
      if (e.data === "Done!") { finish("done"); return; }
      try { showResult(JSON.parse(e.data)); } catch (err) { console.error(err); }
    };
    sock.onclose = (e) => finish(e.code === 1000 ? "done" : `closed (${e.code} ${e.reason})`);
  });
}

function setBusy(busy) {
  $("start").disabled = busy;
  $("file").disabled = busy;
  $("stop").disabled = !busy;
}

async function startMic() {
  setBusy(true);
  try {
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
    let ctx;
    try {
      ctx = new AudioContext({ sampleRate: RATE });  // the browser resamples the microphone (Chrome does)
      ctx.createMediaStreamSource(stream).disconnect();
    } catch (err) {
      if (ctx) ctx.close();
      ctx = new AudioContext();  // else the worklet resamples
    }
    await ctx.audioWorklet.addModule("/capture-worklet.js");
    await openSocket((why) => { stopAudio(); setBusy(false); status(why === "done" ? "finished" : why); });
    const source = ctx.createMediaStreamSource(stream);
    const node = new AudioWorkletNode(ctx, "capture-16k");
    node.port.onmessage = (e) => { if (ws && ws.readyState === WebSocket.OPEN && !finishing) ws.send(e.data.buffer); };
    source.connect(node);
    audio = { ctx, source, node, tracks: stream.getTracks() };
    status(`listening (audio at ${ctx.sampleRate} Hz, sent at 16 kHz)`);
  } catch (err) {
    stopAudio();
    setBusy(false);
    status(`error: ${err.message}`);
  }
}

function stopAudio() {
  if (!audio) return;
  audio.tracks.forEach((t) => t.stop());
  audio.source.disconnect();
  audio.ctx.close();
  audio = null;
}

async function stop() {
  $("stop").disabled = true;
  if (audio) {
    audio.node.port.postMessage("flush");
    await new Promise((r) => setTimeout(r, 150));  // let the last block arrive
    stopAudio();
  }
  if (ws && ws.readyState === WebSocket.OPEN && !finishing) {
    finishing = true;
    ws.send("Done");
    status("finishing…");
  }
}

// The file fallback: decode at 16 kHz (the browser resamples), send 100 ms blocks at 4× real time, then Done.
async function sendFile(file) {
  setBusy(true);
  try {
    const bytes = await file.arrayBuffer();
    const decoded = await new OfflineAudioContext(1, 1, RATE).decodeAudioData(bytes);
    const n = decoded.length;
    const samples = new Float32Array(n);
    for (let c = 0; c < decoded.numberOfChannels; c++) {
      const ch = decoded.getChannelData(c);
      for (let i = 0; i < n; i++) samples[i] += ch[i] / decoded.numberOfChannels;
    }
    await openSocket((why) => { setBusy(false); status(why === "done" ? `finished ${file.name}` : why); });
    status(`sending ${file.name} (${(n / RATE).toFixed(1)} s)`);
    const block = RATE / 10;
    for (let i = 0; i < n && ws && !finishing; i += block) {
      ws.send(samples.slice(i, i + block).buffer);
      await new Promise((r) => setTimeout(r, 25));
    }
    if (ws && !finishing) {
      finishing = true;
      ws.send("Done");
    }
  } catch (err) {
    setBusy(false);
    status(`error: ${err.message}`);
  }
}

$("start").onclick = startMic;
$("stop").onclick = stop;
$("file").onchange = (e) => { if (e.target.files.length) sendFile(e.target.files[0]); e.target.value = ""; };
