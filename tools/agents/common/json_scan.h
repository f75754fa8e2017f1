/*
 * Minimal JSON scanner shared by the C example agents.
 *
 * The functions never allocate or copy. Each one takes the message bytes and
 * an offset, and returns an offset or a slice of the input. The host parses
 * every message as JSON before it delivers it, so the scanner checks only
 * the structure it needs to find member boundaries and is not a validator.
 * It depends on <stddef.h> only, so it builds with and without a libc.
 */
#ifndef CAXTON_JSON_SCAN_H
#define CAXTON_JSON_SCAN_H

#include <stddef.h>

/* Offset returned when the input ends early or has an unexpected byte. */
#define JSON_SCAN_ERROR ((size_t)-1)

/* A slice [start, end) of the scanned bytes. */
struct json_slice {
    size_t start;
    size_t end;
};

static inline int json_is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static inline size_t json_cstr_len(const char *text) {
    size_t n = 0;
    while (text[n] != '\0') {
        n++;
    }
    return n;
}

/* Returns the offset of the first non-whitespace byte at or after i. */
static inline size_t json_skip_ws(const char *s, size_t len, size_t i) {
    while (i < len && json_is_space(s[i])) {
        i++;
    }
    return i;
}

/*
 * Skips the string that starts with the quote at s[i] and returns the offset
 * just past its closing quote. An escape sequence is skipped as a backslash
 * plus one byte, which is enough to step over \" and \\ and leaves \uXXXX
 * digits to the plain byte loop.
 */
static inline size_t json_skip_string(const char *s, size_t len, size_t i) {
    if (i >= len || s[i] != '"') {
        return JSON_SCAN_ERROR;
    }
    i++;
    while (i < len) {
        char c = s[i];
        if (c == '\\') {
            i += 2;
        } else if (c == '"') {
            return i + 1;
        } else {
            i++;
        }
    }
    return JSON_SCAN_ERROR;
}

/*
 * Skips one JSON value that starts at s[i] (no leading whitespace) and
 * returns the offset just past it. Objects and arrays are skipped by counting
 * brackets outside strings, so nesting depth is limited only by the input.
 * Brackets are not matched by kind, which is safe for input the host has
 * already parsed.
 */
static inline size_t json_skip_value(const char *s, size_t len, size_t i) {
    if (i >= len) {
        return JSON_SCAN_ERROR;
    }

    char first = s[i];
    if (first == '"') {
        return json_skip_string(s, len, i);
    }

    if (first == '{' || first == '[') {
        size_t depth = 0;
        while (i < len) {
            char c = s[i];
            if (c == '"') {
                i = json_skip_string(s, len, i);
                if (i == JSON_SCAN_ERROR) {
                    return JSON_SCAN_ERROR;
                }
                continue;
            }
            if (c == '{' || c == '[') {
                depth++;
            } else if (c == '}' || c == ']') {
                depth--;
                if (depth == 0) {
                    return i + 1;
                }
            }
            i++;
        }
        return JSON_SCAN_ERROR;
    }

    /* A number, true, false or null ends at a delimiter or the input end. */
    size_t start = i;
    while (i < len) {
        char c = s[i];
        if (c == ',' || c == '}' || c == ']' || c == ':' || c == '"' || c == '{' || c == '[' ||
            json_is_space(c)) {
            break;
        }
        i++;
    }
    return i == start ? JSON_SCAN_ERROR : i;
}

/*
 * Finds the member named key in the JSON object that fills s[0..len), with
 * optional surrounding whitespace. Only top-level members are considered,
 * so a key of the same name inside a nested value is never matched. Keys are
 * compared byte for byte without decoding escapes, so key must be plain
 * ASCII. When the key occurs more than once, the first occurrence wins.
 *
 * Returns 1 and stores the value's slice in *value when found, 0 when the
 * object has no such member, and -1 when s is not a JSON object.
 */
static inline int json_find_member(const char *s, size_t len, const char *key,
                                   struct json_slice *value) {
    size_t key_len = json_cstr_len(key);

    size_t i = json_skip_ws(s, len, 0);
    if (i >= len || s[i] != '{') {
        return -1;
    }
    i = json_skip_ws(s, len, i + 1);
    if (i < len && s[i] == '}') {
        return 0;
    }

    for (;;) {
        size_t key_start = i + 1;
        i = json_skip_string(s, len, i);
        if (i == JSON_SCAN_ERROR) {
            return -1;
        }
        size_t key_end = i - 1;

        i = json_skip_ws(s, len, i);
        if (i >= len || s[i] != ':') {
            return -1;
        }
        i = json_skip_ws(s, len, i + 1);

        size_t value_start = i;
        i = json_skip_value(s, len, i);
        if (i == JSON_SCAN_ERROR) {
            return -1;
        }

        if (key_end - key_start == key_len) {
            size_t k = 0;
            while (k < key_len && s[key_start + k] == key[k]) {
                k++;
            }
            if (k == key_len) {
                value->start = value_start;
                value->end = i;
                return 1;
            }
        }

        i = json_skip_ws(s, len, i);
        if (i < len && s[i] == ',') {
            i = json_skip_ws(s, len, i + 1);
            continue;
        }
        if (i < len && s[i] == '}') {
            return 0;
        }
        return -1;
    }
}

/* Returns 1 when the slice is exactly the bytes of literal, else 0. */
static inline int json_slice_equals(const char *s, struct json_slice slice, const char *literal) {
    size_t n = json_cstr_len(literal);
    if (slice.end - slice.start != n) {
        return 0;
    }
    for (size_t k = 0; k < n; k++) {
        if (s[slice.start + k] != literal[k]) {
            return 0;
        }
    }
    return 1;
}

/* Returns 1 when the slice contains a JSON string (quotes included), else 0. */
static inline int json_slice_is_string(const char *s, struct json_slice slice) {
    return slice.end - slice.start >= 2 && s[slice.start] == '"' && s[slice.end - 1] == '"';
}

/* Returns 1 when the slice contains a JSON object, else 0. */
static inline int json_slice_is_object(const char *s, struct json_slice slice) {
    return slice.end > slice.start && s[slice.start] == '{';
}

/*
 * Looks up the top-level member "performative" and returns 1 when its value
 * is the JSON string given as quoted_name (for example "\"request\""), 0
 * when it is another value or absent, and -1 when s is not a JSON object.
 */
static inline int json_performative_is(const char *s, size_t len, const char *quoted_name) {
    struct json_slice value;
    int found = json_find_member(s, len, "performative", &value);
    if (found <= 0) {
        return found;
    }
    return json_slice_equals(s, value, quoted_name);
}

#endif
