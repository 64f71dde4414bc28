// AudioWorklet: the microphone's samples (at the AudioContext's rate) → low-pass → 16 kHz → blocks of ~100 ms posted
// to the page. Windowed-sinc FIR (Blackman, 0.45 × 16 kHz cut-off) then linear interpolation at the output times.
const TARGET = 16000;
const TAPS = 63;

class Capture16k extends AudioWorkletProcessor {
  constructor() {
    super();
    this.ratio = sampleRate / TARGET;
    this.fir = null;
    if (this.ratio !== 1) {
      const fc = 0.45 * TARGET / sampleRate;  // cycles per input sample
      const h = new Float32Array(TAPS);
      let sum = 0;
      for (let i = 0; i < TAPS; i++) {
        const m = i - (TAPS - 1) / 2;
        const sinc = m === 0 ? 2 * fc : Math.sin(2 * Math.PI * fc * m) / (Math.PI * m);
        const w = 0.42 - 0.5 * Math.cos(2 * Math.PI * i / (TAPS - 1)) + 0.08 * Math.cos(4 * Math.PI * i / (TAPS - 1));
        h[i] = sinc * w;
        sum += h[i];
      }
      for (let i = 0; i < TAPS; i++) h[i] /= sum;
      this.fir = h;
    }
    this.hist = new Float32Array(TAPS);  // last TAPS raw inputs (ring)
    this.hpos = 0;
    this.prev = 0;      // filtered sample before the current one
    this.n = 0;         // index of the next filtered input sample
    this.t = 0;         // input-time position of the next output sample
    this.out = new Float32Array(1600);
    this.len = 0;
    this.port.onmessage = (e) => { if (e.data === "flush") this.flush(); };
  }

  push(x) {
    this.out[this.len++] = x;
    if (this.len === this.out.length) this.flush();
  }

  flush() {
    if (this.len) this.port.postMessage(this.out.slice(0, this.len));
    this.len = 0;
  }

  process(inputs) {
    const input = inputs[0];
    if (!input || input.length === 0) return true;
    const ch = input[0];
    for (let i = 0; i < ch.length; i++) {
      let x = ch[i];
      for (let c = 1; c < input.length; c++) x += input[c][i];
      x /= input.length;
      if (!this.fir) { this.push(x); continue; }
      this.hist[this.hpos] = x;
      this.hpos = (this.hpos + 1) % TAPS;
      let y = 0;
      for (let k = 0; k < TAPS; k++) y += this.fir[k] * this.hist[(this.hpos + k) % TAPS];
      // y is the filtered sample n (delayed by (TAPS-1)/2, the same for every sample): emit outputs in (n-1, n]
      while (this.t <= this.n) {
        const frac = this.t - (this.n - 1);
        this.push(this.prev + (y - this.prev) * frac);
        this.t += this.ratio;
      }
      this.prev = y;
      this.n += 1;
    }
    return true;
  }
}

registerProcessor("capture-16k", Capture16k);
