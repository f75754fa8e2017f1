/*
 * Caxton example agent "responder", built without any libc
 * (clang --target=wasm32 -nostdlib).
 *
 * On a request it replies with an inform whose content is
 * {"status":"done","handled_by":"responder","request":<request content>}.
 * The request content is copied byte for byte, and is null when the request
 * has none. Other performatives are ignored, so two agents can never keep
 * replying to each other.
 */
#include <stddef.h>
#include <stdint.h>

#include "../common/json_scan.h"

#define CAXTON_IMPORT(name) __attribute__((import_module("caxton"), import_name(name)))
#define CAXTON_EXPORT(name) __attribute__((export_name(name)))

CAXTON_IMPORT("send_message") int32_t caxton_send_message(const char *json, int32_t len);
CAXTON_IMPORT("console_log") void caxton_console_log(const char *text, int32_t len);

#define WASM_PAGE_SIZE 65536u

/* First free byte after the static data and the stack, set by wasm-ld. */
extern unsigned char __heap_base;

/* Next free heap byte, or 0 before the first allocation. */
static uintptr_t heap_top;

static uintptr_t heap_start(void) {
    return (uintptr_t)&__heap_base;
}

/*
 * Allocates len bytes from a bump heap and returns 0 when memory cannot grow.
 * Every block stays valid until the next call of handle_message returns,
 * which releases all of them at once. The host writes one input buffer per
 * handler call, so this is all the reuse the agent needs.
 */
CAXTON_EXPORT("alloc") void *alloc(int32_t len) {
    if (len < 0) {
        return 0;
    }
    if (heap_top == 0) {
        heap_top = heap_start();
    }

    uint64_t start = ((uint64_t)heap_top + 7u) & ~(uint64_t)7u;
    uint64_t end = start + (uint64_t)(uint32_t)len;
    uint64_t available = (uint64_t)__builtin_wasm_memory_size(0) * WASM_PAGE_SIZE;
    if (end > available) {
        uint64_t missing_pages = (end - available + WASM_PAGE_SIZE - 1) / WASM_PAGE_SIZE;
        if (__builtin_wasm_memory_grow(0, (size_t)missing_pages) == (size_t)-1) {
            return 0;
        }
    }

    heap_top = (uintptr_t)end;
    return (void *)(uintptr_t)start;
}

/* Copies n bytes to out and returns the byte after the copy. */
static char *append(char *out, const char *bytes, size_t n) {
    for (size_t k = 0; k < n; k++) {
        out[k] = bytes[k];
    }
    return out + n;
}

/* Handles one message. Returns 0 when handled and 1 on failure. */
static int32_t respond(const char *msg, size_t len) {
    int is_request = json_performative_is(msg, len, "\"request\"");
    if (is_request < 0) {
        return 1;
    }
    if (is_request == 0) {
        return 0;
    }

    static const char prefix[] =
        "{\"performative\":\"inform\",\"content\":"
        "{\"status\":\"done\",\"handled_by\":\"responder\",\"request\":";
    static const char suffix[] = "}}";
    static const char null_value[] = "null";

    const char *request_content = null_value;
    size_t request_content_len = sizeof null_value - 1;
    struct json_slice content;
    if (json_find_member(msg, len, "content", &content) == 1) {
        request_content = msg + content.start;
        request_content_len = content.end - content.start;
    }

    size_t reply_len = (sizeof prefix - 1) + request_content_len + (sizeof suffix - 1);
    if (reply_len > INT32_MAX) {
        return 1;
    }
    char *reply = alloc((int32_t)reply_len);
    if (reply == 0) {
        return 1;
    }

    char *end = append(reply, prefix, sizeof prefix - 1);
    end = append(end, request_content, request_content_len);
    append(end, suffix, sizeof suffix - 1);

    return caxton_send_message(reply, (int32_t)reply_len) < 0 ? 1 : 0;
}

CAXTON_EXPORT("handle_message") int32_t handle_message(const char *msg, int32_t len) {
    int32_t result = len < 0 ? 1 : respond(msg, (size_t)len);
    heap_top = heap_start();
    return result;
}

CAXTON_EXPORT("agent_init") int32_t agent_init(void) {
    static const char ready[] = "responder ready";
    caxton_console_log(ready, (int32_t)(sizeof ready - 1));
    return 0;
}
