;; Caxton example agent "echo", written by hand in WebAssembly text format.
;;
;; On a request it replies with {"performative":"inform","content":<input>},
;; where <input> is the whole request message JSON. It sets no receiver, so
;; the host delivers the reply to the request's sender. Other performatives
;; are ignored, so two agents can never keep replying to each other.
;;
;; Memory layout: static strings below 1024, bump heap from 1024 upwards.
;; The heap is reset when handle_message returns, so a buffer from alloc
;; stays valid until the next handler call ends.
(module
  (import "caxton" "send_message" (func $send_message (param i32 i32) (result i32)))

  (memory (export "memory") 1)

  ;; "performative" with its quotes, 14 bytes.
  (data (i32.const 16) "\22performative\22")
  ;; "request" with its quotes, 9 bytes.
  (data (i32.const 32) "\22request\22")
  ;; Start of the reply, 35 bytes. The input and a closing brace follow it.
  (data (i32.const 48) "{\22performative\22:\22inform\22,\22content\22:")

  (global $performative_key i32 (i32.const 16))
  (global $performative_key_len i32 (i32.const 14))
  (global $request_value i32 (i32.const 32))
  (global $request_value_len i32 (i32.const 9))
  (global $reply_prefix i32 (i32.const 48))
  (global $reply_prefix_len i32 (i32.const 35))

  (global $heap_base i32 (i32.const 1024))
  (global $heap_top (mut i32) (i32.const 1024))

  ;; Returns a pointer to len bytes, 8-byte aligned, or 0 when the length is
  ;; negative or the memory cannot grow.
  (func $alloc (export "alloc") (param $len i32) (result i32)
    (local $start i32)
    (local $end i64)
    (local $available i64)

    (if (i32.lt_s (local.get $len) (i32.const 0))
      (then (return (i32.const 0))))

    (local.set $start
      (i32.and (i32.add (global.get $heap_top) (i32.const 7)) (i32.const -8)))
    ;; 64-bit arithmetic keeps start + len from wrapping around.
    (local.set $end
      (i64.add (i64.extend_i32_u (local.get $start)) (i64.extend_i32_u (local.get $len))))
    (local.set $available
      (i64.mul (i64.extend_i32_u (memory.size)) (i64.const 65536)))

    (if (i64.gt_u (local.get $end) (local.get $available))
      (then
        (if (i32.eq
              (memory.grow
                (i32.wrap_i64
                  (i64.div_u
                    (i64.add (i64.sub (local.get $end) (local.get $available)) (i64.const 65535))
                    (i64.const 65536))))
              (i32.const -1))
          (then (return (i32.const 0))))))

    (global.set $heap_top (i32.wrap_i64 (local.get $end)))
    (local.get $start))

  ;; Returns 1 when the len bytes at a equal the len bytes at b, else 0.
  (func $bytes_equal (param $a i32) (param $b i32) (param $len i32) (result i32)
    (local $i i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        (if (i32.ne
              (i32.load8_u (i32.add (local.get $a) (local.get $i)))
              (i32.load8_u (i32.add (local.get $b) (local.get $i))))
          (then (return (i32.const 0))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i32.const 1))

  ;; Returns the offset of the first byte at or after i that is not JSON
  ;; whitespace, or len.
  (func $skip_whitespace (param $ptr i32) (param $len i32) (param $i i32) (result i32)
    (local $c i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        (local.set $c (i32.load8_u (i32.add (local.get $ptr) (local.get $i))))
        (br_if $done
          (i32.eqz
            (i32.or
              (i32.or (i32.eq (local.get $c) (i32.const 0x20)) (i32.eq (local.get $c) (i32.const 0x09)))
              (i32.or (i32.eq (local.get $c) (i32.const 0x0a)) (i32.eq (local.get $c) (i32.const 0x0d))))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (local.get $i))

  ;; Returns 1 when the top-level "performative" member of the JSON object
  ;; at ptr is the string "request", else 0.
  ;;
  ;; The scan tracks the nesting depth and skips string contents, escapes
  ;; included, so a "performative" key inside the content is never matched.
  ;; A string at depth 1 is taken as the key when a colon follows it, which
  ;; tells it apart from a string value that happens to read "performative".
  (func $is_request (param $ptr i32) (param $len i32) (result i32)
    (local $i i32)
    (local $j i32)
    (local $c i32)
    (local $depth i32)

    (block $end_of_input
      (loop $next_byte
        (br_if $end_of_input (i32.ge_u (local.get $i) (local.get $len)))
        (local.set $c (i32.load8_u (i32.add (local.get $ptr) (local.get $i))))

        (if (i32.eq (local.get $c) (i32.const 0x22))
          (then
            ;; A string starts at i. Check for the key first.
            (if (i32.and
                  (i32.eq (local.get $depth) (i32.const 1))
                  (i32.le_u
                    (global.get $performative_key_len)
                    (i32.sub (local.get $len) (local.get $i))))
              (then
                (if (call $bytes_equal
                      (i32.add (local.get $ptr) (local.get $i))
                      (global.get $performative_key)
                      (global.get $performative_key_len))
                  (then
                    (local.set $j
                      (call $skip_whitespace (local.get $ptr) (local.get $len)
                        (i32.add (local.get $i) (global.get $performative_key_len))))
                    (if (i32.and
                          (i32.lt_u (local.get $j) (local.get $len))
                          (i32.eq
                            (i32.load8_u (i32.add (local.get $ptr) (local.get $j)))
                            (i32.const 0x3a)))
                      (then
                        (local.set $j
                          (call $skip_whitespace (local.get $ptr) (local.get $len)
                            (i32.add (local.get $j) (i32.const 1))))
                        (if (i32.gt_u
                              (global.get $request_value_len)
                              (i32.sub (local.get $len) (local.get $j)))
                          (then (return (i32.const 0))))
                        (return
                          (call $bytes_equal
                            (i32.add (local.get $ptr) (local.get $j))
                            (global.get $request_value)
                            (global.get $request_value_len)))))))))

            ;; Skip to the byte after the closing quote. A backslash skips
            ;; the byte after it, which covers \" and \\.
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (block $string_end
              (loop $string_byte
                (if (i32.ge_u (local.get $i) (local.get $len))
                  (then (return (i32.const 0))))
                (local.set $c (i32.load8_u (i32.add (local.get $ptr) (local.get $i))))
                (if (i32.eq (local.get $c) (i32.const 0x5c))
                  (then
                    (local.set $i (i32.add (local.get $i) (i32.const 2)))
                    (br $string_byte)))
                (local.set $i (i32.add (local.get $i) (i32.const 1)))
                (br_if $string_end (i32.eq (local.get $c) (i32.const 0x22)))
                (br $string_byte)))
            (br $next_byte)))

        ;; "{" and "[" open a level, "}" and "]" close one.
        (if (i32.or (i32.eq (local.get $c) (i32.const 0x7b)) (i32.eq (local.get $c) (i32.const 0x5b)))
          (then (local.set $depth (i32.add (local.get $depth) (i32.const 1)))))
        (if (i32.or (i32.eq (local.get $c) (i32.const 0x7d)) (i32.eq (local.get $c) (i32.const 0x5d)))
          (then (local.set $depth (i32.sub (local.get $depth) (i32.const 1)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next_byte)))
    (i32.const 0))

  ;; Sends the reply for a request. Returns 0 when the reply was queued and
  ;; 1 when memory ran out or the host rejected it.
  (func $reply (param $ptr i32) (param $len i32) (result i32)
    (local $reply i32)
    (local $reply_len i32)

    ;; Prefix, input, closing brace. Inputs this close to 2 GiB never fit
    ;; the host's message size limit anyway.
    (if (i32.gt_u (local.get $len) (i32.const 0x7fff0000))
      (then (return (i32.const 1))))
    (local.set $reply_len
      (i32.add (i32.add (global.get $reply_prefix_len) (local.get $len)) (i32.const 1)))
    (local.set $reply (call $alloc (local.get $reply_len)))
    (if (i32.eqz (local.get $reply))
      (then (return (i32.const 1))))

    (memory.copy (local.get $reply) (global.get $reply_prefix) (global.get $reply_prefix_len))
    (memory.copy
      (i32.add (local.get $reply) (global.get $reply_prefix_len))
      (local.get $ptr)
      (local.get $len))
    (i32.store8
      (i32.sub (i32.add (local.get $reply) (local.get $reply_len)) (i32.const 1))
      (i32.const 0x7d))

    (if (result i32)
      (i32.lt_s (call $send_message (local.get $reply) (local.get $reply_len)) (i32.const 0))
      (then (i32.const 1))
      (else (i32.const 0))))

  ;; Handles one message. Returns 0 when handled (including ignored
  ;; performatives) and 1 on failure.
  (func (export "handle_message") (param $ptr i32) (param $len i32) (result i32)
    (local $result i32)
    (if (i32.lt_s (local.get $len) (i32.const 0))
      (then (return (i32.const 1))))
    (if (call $is_request (local.get $ptr) (local.get $len))
      (then (local.set $result (call $reply (local.get $ptr) (local.get $len)))))
    (global.set $heap_top (global.get $heap_base))
    (local.get $result)))
