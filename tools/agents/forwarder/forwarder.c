/*
 * Caxton example agent "forwarder", a WASI reactor built with wasi-libc
 * (clang --target=wasm32-wasi -mexec-model=reactor). It uses wasi-libc only
 * for malloc and string functions, so the module imports nothing from WASI.
 *
 * A request is forwarded as a new request to the agent named in
 * content.forward_to, or to "echo" when that member is absent, with the same
 * content and conversation_id. The agent stores conversation_id -> requester
 * in a bounded table. When the target replies with an inform or a failure in
 * that conversation, the forwarder relays it to the requester with content
 * {"relayed_from":<target>,"content":<target's content>} and forgets the
 * conversation.
 *
 * Loop safety: only a request gets a reply (a forward or a failure), and
 * each forward leads to at most one relay. A request whose conversation
 * already has a pending forward is rejected, which also ends a chain of
 * forwarders that leads back to one of them.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../common/json_scan.h"

/*
 * The wrappers have caxton_ names because wasi-libc defines functions such
 * as send(), and a libc definition with the same name as an import silently
 * replaces the import at link time.
 */
#define CAXTON_IMPORT(name) __attribute__((import_module("caxton"), import_name(name)))
#define CAXTON_EXPORT(name) __attribute__((export_name(name)))

CAXTON_IMPORT("send_message") int32_t caxton_send_message(const char *json, int32_t len);
CAXTON_IMPORT("console_log") void caxton_console_log(const char *text, int32_t len);
CAXTON_IMPORT("console_error") void caxton_console_error(const char *text, int32_t len);
CAXTON_IMPORT("current_timestamp") int64_t caxton_current_timestamp(void);
CAXTON_IMPORT("random_u32") int32_t caxton_random_u32(void);

/* ---- Growable byte buffer ------------------------------------------------ */

struct buffer {
    char *data;
    size_t len;
    size_t capacity;
    int out_of_memory;
};

static void buffer_append(struct buffer *b, const char *bytes, size_t n) {
    if (b->out_of_memory) {
        return;
    }
    if (n > SIZE_MAX - b->len) {
        b->out_of_memory = 1;
        return;
    }
    if (b->len + n > b->capacity) {
        size_t capacity = b->capacity ? b->capacity : 256;
        while (capacity < b->len + n) {
            if (capacity > SIZE_MAX / 2) {
                capacity = b->len + n;
                break;
            }
            capacity *= 2;
        }
        char *data = realloc(b->data, capacity);
        if (data == NULL) {
            b->out_of_memory = 1;
            return;
        }
        b->data = data;
        b->capacity = capacity;
    }
    memcpy(b->data + b->len, bytes, n);
    b->len += n;
}

static void buffer_append_text(struct buffer *b, const char *text) {
    buffer_append(b, text, strlen(text));
}

static void buffer_append_slice(struct buffer *b, const char *msg, struct json_slice slice) {
    buffer_append(b, msg + slice.start, slice.end - slice.start);
}

/* Appends the characters of a JSON string slice without its quotes. */
static void buffer_append_string_body(struct buffer *b, const char *msg, struct json_slice slice) {
    buffer_append(b, msg + slice.start + 1, slice.end - slice.start - 2);
}

static void buffer_free(struct buffer *b) {
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->capacity = 0;
}

/* ---- Host calls ---------------------------------------------------------- */

static void log_info(struct buffer *line) {
    if (!line->out_of_memory && line->len <= INT32_MAX) {
        caxton_console_log(line->data, (int32_t)line->len);
    }
    buffer_free(line);
}

static void log_error_text(const char *text) {
    caxton_console_error(text, (int32_t)strlen(text));
}

static void log_error(struct buffer *line) {
    if (!line->out_of_memory && line->len <= INT32_MAX) {
        caxton_console_error(line->data, (int32_t)line->len);
    } else {
        log_error_text("forwarder: out of memory while formatting a log line");
    }
    buffer_free(line);
}

/* Error code for a message that could not be built, below every host code. */
#define SEND_OUT_OF_MEMORY INT32_MIN

/* Passes a message to send_message, frees it and returns the host's result. */
static int32_t send_buffer(struct buffer *message) {
    int32_t result = SEND_OUT_OF_MEMORY;
    if (!message->out_of_memory && message->len <= INT32_MAX) {
        result = caxton_send_message(message->data, (int32_t)message->len);
    }
    buffer_free(message);
    return result;
}

/*
 * Replies with a failure whose content is {"error":"<prefix><detail>"}.
 * detail must be a JSON string slice, and its escaped body is copied as is,
 * so the result stays valid JSON.
 */
static int32_t reply_failure(const char *prefix, const char *msg, const struct json_slice *detail) {
    struct buffer reply = {0};
    buffer_append_text(&reply, "{\"performative\":\"failure\",\"content\":{\"error\":\"");
    buffer_append_text(&reply, prefix);
    if (detail != NULL) {
        buffer_append_string_body(&reply, msg, *detail);
    }
    buffer_append_text(&reply, "\"}}");
    int32_t result = send_buffer(&reply);
    if (result < 0) {
        log_error_text("forwarder: the host rejected a failure reply");
    }
    return result;
}

/* ---- Pending conversations ----------------------------------------------- */

/* Forwards that await a reply. The oldest entry is evicted when all are in use. */
#define PENDING_CAPACITY 256

struct pending_conversation {
    char *conversation_id; /* JSON string with quotes, or NULL for a free entry */
    size_t conversation_id_len;
    char *requester; /* JSON value of the request's sender */
    size_t requester_len;
    uint64_t sequence; /* insertion order, used to find the oldest entry */
};

static struct pending_conversation pending[PENDING_CAPACITY];
static uint64_t next_sequence = 1;

static int bytes_equal(const char *a, size_t a_len, const char *b, size_t b_len) {
    return a_len == b_len && memcmp(a, b, a_len) == 0;
}

static char *copy_bytes(const char *bytes, size_t n) {
    char *copy = malloc(n ? n : 1);
    if (copy != NULL) {
        memcpy(copy, bytes, n);
    }
    return copy;
}

static void pending_remove(size_t index) {
    free(pending[index].conversation_id);
    free(pending[index].requester);
    memset(&pending[index], 0, sizeof pending[index]);
}

/* Returns the index of the entry for the conversation, or -1. */
static int pending_find(const char *conversation_id, size_t len) {
    for (size_t i = 0; i < PENDING_CAPACITY; i++) {
        if (pending[i].conversation_id != NULL &&
            bytes_equal(pending[i].conversation_id, pending[i].conversation_id_len, conversation_id,
                        len)) {
            return (int)i;
        }
    }
    return -1;
}

/*
 * Stores a new entry in a free slot, or in place of the oldest entry when
 * the table is full. Returns its index, or -1 when malloc fails.
 */
static int pending_insert(const char *conversation_id, size_t conversation_id_len,
                          const char *requester, size_t requester_len) {
    size_t slot = 0;
    for (size_t i = 0; i < PENDING_CAPACITY; i++) {
        if (pending[i].conversation_id == NULL) {
            slot = i;
            break;
        }
        if (pending[i].sequence < pending[slot].sequence) {
            slot = i;
        }
    }

    char *conversation_copy = copy_bytes(conversation_id, conversation_id_len);
    char *requester_copy = copy_bytes(requester, requester_len);
    if (conversation_copy == NULL || requester_copy == NULL) {
        free(conversation_copy);
        free(requester_copy);
        return -1;
    }

    if (pending[slot].conversation_id != NULL) {
        struct buffer line = {0};
        buffer_append_text(&line, "forwarder: table full, forgetting conversation ");
        buffer_append(&line, pending[slot].conversation_id, pending[slot].conversation_id_len);
        log_error(&line);
        pending_remove(slot);
    }

    pending[slot].conversation_id = conversation_copy;
    pending[slot].conversation_id_len = conversation_id_len;
    pending[slot].requester = requester_copy;
    pending[slot].requester_len = requester_len;
    pending[slot].sequence = next_sequence++;
    return (int)slot;
}

/* ---- Message handling ---------------------------------------------------- */

/* Target used when a request has no content.forward_to. */
static const char default_target[] = "\"echo\"";

/*
 * Writes a new conversation id of the form "fwd-<timestamp hex>-<random hex>",
 * quotes included, into out, which must hold at least 32 bytes. Returns its
 * length.
 */
static size_t make_conversation_id(char *out) {
    static const char hex[] = "0123456789abcdef";
    uint64_t timestamp = (uint64_t)caxton_current_timestamp();
    uint32_t random = (uint32_t)caxton_random_u32();
    size_t n = 0;

    out[n++] = '"';
    memcpy(out + n, "fwd-", 4);
    n += 4;
    for (int shift = 60; shift >= 0; shift -= 4) {
        out[n++] = hex[(timestamp >> shift) & 0xf];
    }
    out[n++] = '-';
    for (int shift = 28; shift >= 0; shift -= 4) {
        out[n++] = hex[(random >> shift) & 0xf];
    }
    out[n++] = '"';
    return n;
}

static int32_t handle_request(const char *msg, size_t len) {
    struct json_slice sender;
    if (json_find_member(msg, len, "sender", &sender) != 1) {
        log_error_text("forwarder: request without sender, cannot forward it");
        return 1;
    }

    struct json_slice content;
    int has_content = json_find_member(msg, len, "content", &content) == 1;

    /* The target name, as a JSON string. */
    const char *target_msg = default_target;
    struct json_slice target = {0, sizeof default_target - 1};
    if (has_content && json_slice_is_object(msg, content)) {
        struct json_slice forward_to;
        if (json_find_member(msg + content.start, content.end - content.start, "forward_to",
                             &forward_to) == 1) {
            forward_to.start += content.start;
            forward_to.end += content.start;
            if (!json_slice_is_string(msg, forward_to)) {
                reply_failure("content.forward_to must be a string", msg, NULL);
                return 0;
            }
            target_msg = msg;
            target = forward_to;
        }
    }

    /* The conversation id, as a JSON string. A new one is made when absent. */
    char generated_id[32];
    const char *conversation_msg = msg;
    struct json_slice conversation;
    int has_conversation = json_find_member(msg, len, "conversation_id", &conversation) == 1 &&
                           !json_slice_equals(msg, conversation, "null");
    if (has_conversation && !json_slice_is_string(msg, conversation)) {
        reply_failure("conversation_id must be a string", msg, NULL);
        return 0;
    }
    if (!has_conversation) {
        conversation_msg = generated_id;
        conversation.start = 0;
        conversation.end = make_conversation_id(generated_id);
    }
    const char *conversation_id = conversation_msg + conversation.start;
    size_t conversation_id_len = conversation.end - conversation.start;

    if (pending_find(conversation_id, conversation_id_len) >= 0) {
        reply_failure("a forwarded request is already pending in conversation ", conversation_msg,
                      &conversation);
        return 0;
    }

    int slot = pending_insert(conversation_id, conversation_id_len, msg + sender.start,
                              sender.end - sender.start);
    if (slot < 0) {
        log_error_text("forwarder: out of memory while storing a conversation");
        return 1;
    }

    struct buffer forward = {0};
    buffer_append_text(&forward, "{\"performative\":\"request\",\"receiver\":");
    buffer_append_slice(&forward, target_msg, target);
    buffer_append_text(&forward, ",\"conversation_id\":");
    buffer_append(&forward, conversation_id, conversation_id_len);
    buffer_append_text(&forward, ",\"content\":");
    if (has_content) {
        buffer_append_slice(&forward, msg, content);
    } else {
        buffer_append_text(&forward, "null");
    }
    buffer_append_text(&forward, "}");
    int32_t result = send_buffer(&forward);

    struct buffer line = {0};
    if (result < 0) {
        pending_remove((size_t)slot);
        buffer_append_text(&line, "forwarder: cannot forward conversation ");
        buffer_append(&line, conversation_id, conversation_id_len);
        buffer_append_text(&line, " to ");
        buffer_append_slice(&line, target_msg, target);
        log_error(&line);
        /* The requester gets a failure reply, and the request counts as handled. */
        reply_failure("cannot forward to ", target_msg, &target);
        return 0;
    }

    buffer_append_text(&line, "forwarder: forwarded conversation ");
    buffer_append(&line, conversation_id, conversation_id_len);
    buffer_append_text(&line, " from ");
    buffer_append_slice(&line, msg, sender);
    buffer_append_text(&line, " to ");
    buffer_append_slice(&line, target_msg, target);
    log_info(&line);
    return 0;
}

/*
 * Relays an inform or failure that replies to a forwarded request. Messages in
 * unknown conversations, and messages from the requester itself, are ignored.
 */
static int32_t handle_reply(const char *msg, size_t len, const char *performative) {
    struct json_slice conversation;
    if (json_find_member(msg, len, "conversation_id", &conversation) != 1) {
        return 0;
    }
    int slot = pending_find(msg + conversation.start, conversation.end - conversation.start);
    if (slot < 0) {
        return 0;
    }
    struct pending_conversation *entry = &pending[slot];

    struct json_slice sender;
    int has_sender = json_find_member(msg, len, "sender", &sender) == 1;
    if (has_sender &&
        bytes_equal(msg + sender.start, sender.end - sender.start, entry->requester,
                    entry->requester_len)) {
        return 0;
    }

    struct json_slice content;
    int has_content = json_find_member(msg, len, "content", &content) == 1;

    struct buffer relay = {0};
    buffer_append_text(&relay, "{\"performative\":");
    buffer_append_text(&relay, performative);
    buffer_append_text(&relay, ",\"receiver\":");
    buffer_append(&relay, entry->requester, entry->requester_len);
    buffer_append_text(&relay, ",\"conversation_id\":");
    buffer_append(&relay, entry->conversation_id, entry->conversation_id_len);
    buffer_append_text(&relay, ",\"content\":{\"relayed_from\":");
    if (has_sender) {
        buffer_append_slice(&relay, msg, sender);
    } else {
        buffer_append_text(&relay, "null");
    }
    buffer_append_text(&relay, ",\"content\":");
    if (has_content) {
        buffer_append_slice(&relay, msg, content);
    } else {
        buffer_append_text(&relay, "null");
    }
    buffer_append_text(&relay, "}}");
    int32_t result = send_buffer(&relay);

    struct buffer line = {0};
    buffer_append_text(&line, result < 0 ? "forwarder: cannot relay conversation "
                                         : "forwarder: relayed conversation ");
    buffer_append(&line, entry->conversation_id, entry->conversation_id_len);
    buffer_append_text(&line, " to ");
    buffer_append(&line, entry->requester, entry->requester_len);
    pending_remove((size_t)slot);
    if (result < 0) {
        log_error(&line);
        return 1;
    }
    log_info(&line);
    return 0;
}

/* ---- Exports ------------------------------------------------------------- */

CAXTON_EXPORT("alloc") void *alloc(int32_t len) {
    if (len < 0) {
        return NULL;
    }
    return malloc(len > 0 ? (size_t)len : 1);
}

CAXTON_EXPORT("dealloc") void dealloc(void *ptr, int32_t len) {
    (void)len;
    free(ptr);
}

CAXTON_EXPORT("handle_message") int32_t handle_message(const char *msg, int32_t len) {
    if (len < 0) {
        return 1;
    }
    size_t size = (size_t)len;
    struct json_slice performative;
    if (json_find_member(msg, size, "performative", &performative) != 1) {
        log_error_text("forwarder: message is not a JSON object with a performative");
        return 1;
    }

    if (json_slice_equals(msg, performative, "\"request\"")) {
        return handle_request(msg, size);
    }
    if (json_slice_equals(msg, performative, "\"inform\"")) {
        return handle_reply(msg, size, "\"inform\"");
    }
    if (json_slice_equals(msg, performative, "\"failure\"")) {
        return handle_reply(msg, size, "\"failure\"");
    }
    return 0;
}

CAXTON_EXPORT("agent_init") int32_t agent_init(void) {
    static const char ready[] = "forwarder ready";
    caxton_console_log(ready, (int32_t)(sizeof ready - 1));
    return 0;
}

CAXTON_EXPORT("agent_shutdown") void agent_shutdown(void) {
    size_t open = 0;
    for (size_t i = 0; i < PENDING_CAPACITY; i++) {
        if (pending[i].conversation_id != NULL) {
            open++;
            pending_remove(i);
        }
    }

    char digits[24];
    size_t n = sizeof digits;
    do {
        digits[--n] = (char)('0' + open % 10);
        open /= 10;
    } while (open > 0);

    struct buffer line = {0};
    buffer_append_text(&line, "forwarder stopped, pending conversations dropped: ");
    buffer_append(&line, digits + n, sizeof digits - n);
    log_info(&line);
}
