// Caxton example agent "counter", written in AssemblyScript.
//
// The count lives in module memory, so it persists across messages for as
// long as the instance runs. A request increments it and gets an inform
// reply whose content is {"count":N}. A request with content
// {"action":"reset"} sets it to 0 and gets the reply {"count":0}. Other
// performatives are ignored, so two agents can never keep replying to each
// other.

@external("caxton", "send_message")
declare function sendMessage(ptr: usize, len: i32): i32;

@external("caxton", "console_log")
declare function consoleLog(ptr: usize, len: i32): void;

@external("caxton", "console_error")
declare function consoleError(ptr: usize, len: i32): void;

let count: u64 = 0;

// Largest length that alloc passes to the heap. The TLSF allocator of
// AssemblyScript 0.28 aborts above 1 GiB minus its 4-byte block header, and
// this bound stays below that after rounding to its 16-byte alignment.
const MAX_ALLOCATION: i32 = (1 << 30) - 16;

// Static buffer for the reply and for log lines, so sending needs no heap.
const OUTPUT_CAPACITY: i32 = 256;
const output: usize = memory.data(OUTPUT_CAPACITY);

// ---- Output buffer ---------------------------------------------------------

// Writes the ASCII text at offset in the output buffer, replacing other
// characters with '?', and returns the offset after it. Text past the end of
// the buffer is cut off.
function writeAscii(offset: i32, text: string): i32 {
  for (let k = 0; k < text.length && offset < OUTPUT_CAPACITY; k++) {
    const c = text.charCodeAt(k);
    store<u8>(output + <usize>offset, c < 0x80 ? <u8>c : 0x3f);
    offset++;
  }
  return offset;
}

// Writes value in decimal at offset and returns the offset after it.
// A u64 has at most 20 digits, which the callers leave room for.
function writeDecimal(offset: i32, value: u64): i32 {
  let digits = 1;
  for (let rest = value / 10; rest > 0; rest /= 10) {
    digits++;
  }
  let end = offset + digits;
  let rest = value;
  for (let position = end - 1; position >= offset; position--) {
    store<u8>(output + <usize>position, <u8>(0x30 + <u32>(rest % 10)));
    rest /= 10;
  }
  return end;
}

// ---- JSON scanning ---------------------------------------------------------
//
// A byte scanner over the message, which the host has already parsed as
// JSON, so it checks only the structure it needs to find members.

const SCAN_ERROR: i32 = -1;

// Slice of the value found by the last successful findMember call.
let memberStart: i32 = 0;
let memberEnd: i32 = 0;

function byteAt(ptr: usize, i: i32): u8 {
  return load<u8>(ptr + <usize>i);
}

function isSpace(c: u8): bool {
  return c == 0x20 || c == 0x09 || c == 0x0a || c == 0x0d;
}

function skipSpace(ptr: usize, len: i32, i: i32): i32 {
  while (i < len && isSpace(byteAt(ptr, i))) i++;
  return i;
}

// Skips the string whose opening quote is at i and returns the offset after
// its closing quote. A backslash skips the byte after it.
function skipString(ptr: usize, len: i32, i: i32): i32 {
  if (i >= len || byteAt(ptr, i) != 0x22) return SCAN_ERROR;
  i++;
  while (i < len) {
    const c = byteAt(ptr, i);
    if (c == 0x5c) {
      i += 2;
    } else if (c == 0x22) {
      return i + 1;
    } else {
      i++;
    }
  }
  return SCAN_ERROR;
}

// Skips the value that starts at i and returns the offset after it. Objects
// and arrays are skipped by counting brackets outside strings.
function skipValue(ptr: usize, len: i32, i: i32): i32 {
  if (i >= len) return SCAN_ERROR;
  const first = byteAt(ptr, i);
  if (first == 0x22) return skipString(ptr, len, i);

  if (first == 0x7b || first == 0x5b) {
    let depth = 0;
    while (i < len) {
      const c = byteAt(ptr, i);
      if (c == 0x22) {
        i = skipString(ptr, len, i);
        if (i == SCAN_ERROR) return SCAN_ERROR;
        continue;
      }
      if (c == 0x7b || c == 0x5b) {
        depth++;
      } else if (c == 0x7d || c == 0x5d) {
        depth--;
        if (depth == 0) return i + 1;
      }
      i++;
    }
    return SCAN_ERROR;
  }

  // A number, true, false or null ends at a delimiter or the input end.
  const start = i;
  while (i < len) {
    const c = byteAt(ptr, i);
    if (c == 0x2c || c == 0x7d || c == 0x5d || c == 0x3a || c == 0x22 || isSpace(c)) break;
    i++;
  }
  return i == start ? SCAN_ERROR : i;
}

// Returns true when the len bytes at ptr + start are the ASCII text.
function bytesEqual(ptr: usize, start: i32, len: i32, text: string): bool {
  if (len != text.length) return false;
  for (let k = 0; k < len; k++) {
    if (<i32>byteAt(ptr, start + k) != text.charCodeAt(k)) return false;
  }
  return true;
}

// Finds the top-level member named key in the JSON object at ptr. Returns 1
// and sets memberStart and memberEnd when found, 0 when absent, and -1 when
// the bytes are not a JSON object. Keys are compared without decoding
// escapes, and the first occurrence of a key wins.
function findMember(ptr: usize, len: i32, key: string): i32 {
  let i = skipSpace(ptr, len, 0);
  if (i >= len || byteAt(ptr, i) != 0x7b) return -1;
  i = skipSpace(ptr, len, i + 1);
  if (i < len && byteAt(ptr, i) == 0x7d) return 0;

  while (true) {
    const keyStart = i + 1;
    i = skipString(ptr, len, i);
    if (i == SCAN_ERROR) return -1;
    const keyEnd = i - 1;

    i = skipSpace(ptr, len, i);
    if (i >= len || byteAt(ptr, i) != 0x3a) return -1;
    i = skipSpace(ptr, len, i + 1);

    const valueStart = i;
    i = skipValue(ptr, len, i);
    if (i == SCAN_ERROR) return -1;

    if (bytesEqual(ptr, keyStart, keyEnd - keyStart, key)) {
      memberStart = valueStart;
      memberEnd = i;
      return 1;
    }

    i = skipSpace(ptr, len, i);
    if (i < len && byteAt(ptr, i) == 0x2c) {
      i = skipSpace(ptr, len, i + 1);
      continue;
    }
    if (i < len && byteAt(ptr, i) == 0x7d) return 0;
    return -1;
  }
  return -1;
}

// Returns true when the message content is an object whose "action" member
// is the string "reset".
function isResetRequest(ptr: usize, len: i32): bool {
  if (findMember(ptr, len, "content") != 1) return false;
  const contentStart = memberStart;
  const contentEnd = memberEnd;
  if (byteAt(ptr, contentStart) != 0x7b) return false;

  const contentPtr = ptr + <usize>contentStart;
  if (findMember(contentPtr, contentEnd - contentStart, "action") != 1) return false;
  return bytesEqual(contentPtr, memberStart, memberEnd - memberStart, "\"reset\"");
}

// ---- Exports ---------------------------------------------------------------

// Returns a block of len bytes from the AssemblyScript heap, or 0 for a
// negative or oversized length.
// NOTE: when memory cannot grow, the TLSF allocator of AssemblyScript 0.28
// executes `unreachable`, so the call traps instead of returning 0.
export function alloc(len: i32): usize {
  if (len < 0 || len > MAX_ALLOCATION) return 0;
  return heap.alloc(<usize>len);
}

export function dealloc(ptr: usize, len: i32): void {
  if (ptr != 0) heap.free(ptr);
}

// Handles one message. Returns 0 when handled (including ignored
// performatives) and 1 on failure.
export function handle_message(ptr: usize, len: i32): i32 {
  if (len < 0) return 1;
  const found = findMember(ptr, len, "performative");
  if (found < 0) return 1;
  if (found == 0 || !bytesEqual(ptr, memberStart, memberEnd - memberStart, "\"request\"")) {
    return 0;
  }

  if (isResetRequest(ptr, len)) {
    count = 0;
  } else {
    count++;
  }

  let end = writeAscii(0, "{\"performative\":\"inform\",\"content\":{\"count\":");
  end = writeDecimal(end, count);
  end = writeAscii(end, "}}");
  return sendMessage(output, end) < 0 ? 1 : 0;
}

export function agent_init(): i32 {
  const end = writeAscii(0, "counter ready");
  consoleLog(output, end);
  return 0;
}

// Replaces AssemblyScript's default abort, which would import env.abort.
// It logs the message and location through console_error and traps. It
// writes into the static buffer only, because it may run when the heap is
// exhausted.
function agentAbort(
  message: string | null,
  fileName: string | null,
  lineNumber: u32,
  columnNumber: u32,
): void {
  let end = writeAscii(0, "counter: abort: ");
  end = writeAscii(end, message !== null ? message : "(no message)");
  end = writeAscii(end, " at ");
  end = writeAscii(end, fileName !== null ? fileName : "(unknown file)");
  end = writeAscii(end, ":");
  if (end + 24 < OUTPUT_CAPACITY) {
    end = writeDecimal(end, lineNumber);
    end = writeAscii(end, ":");
    end = writeDecimal(end, columnNumber);
  }
  consoleError(output, end);
  unreachable();
}
