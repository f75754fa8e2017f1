/*
 * Caxton example agent "wasi-echo", a WASI command built with wasi-libc
 * (clang --target=wasm32-wasi). The host runs it once per message in a fresh
 * instance, with the message JSON and a newline on stdin.
 *
 * For a request it writes one stdout line,
 * {"performative":"inform","content":{"echo":<the input message>}}, which
 * the host sends as the reply. For other performatives it writes nothing.
 * Either way it writes "wasi-echo handled N bytes" to stderr and exits 0.
 * Input that is not a JSON object makes it exit 1.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/json_scan.h"

/*
 * Reads stdin up to the first newline or the end of input. Returns a
 * malloc'd buffer without the newline and stores its length, or returns NULL
 * when memory runs out or reading fails.
 */
static char *read_line(size_t *line_len) {
    size_t capacity = 4096;
    size_t len = 0;
    char *line = malloc(capacity);
    if (line == NULL) {
        return NULL;
    }

    int c;
    while ((c = getchar()) != EOF && c != '\n') {
        if (len == capacity) {
            capacity *= 2;
            char *bigger = realloc(line, capacity);
            if (bigger == NULL) {
                free(line);
                return NULL;
            }
            line = bigger;
        }
        line[len++] = (char)c;
    }
    if (ferror(stdin)) {
        free(line);
        return NULL;
    }

    /* A CRLF line ending leaves a carriage return behind. */
    if (len > 0 && line[len - 1] == '\r') {
        len--;
    }
    *line_len = len;
    return line;
}

int main(void) {
    size_t len = 0;
    char *message = read_line(&len);
    if (message == NULL) {
        fprintf(stderr, "wasi-echo: failed to read the message from stdin\n");
        return 1;
    }

    int is_request = json_performative_is(message, len, "\"request\"");
    if (is_request < 0) {
        fprintf(stderr, "wasi-echo: invalid input, expected one JSON object on stdin (%zu bytes read)\n",
                len);
        free(message);
        return 1;
    }

    if (is_request) {
        fputs("{\"performative\":\"inform\",\"content\":{\"echo\":", stdout);
        fwrite(message, 1, len, stdout);
        fputs("}}\n", stdout);
        if (fflush(stdout) != 0) {
            fprintf(stderr, "wasi-echo: failed to write the reply to stdout\n");
            free(message);
            return 1;
        }
    }

    fprintf(stderr, "wasi-echo handled %zu bytes\n", len);
    free(message);
    return 0;
}
