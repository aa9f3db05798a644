#include "nesting.h"

int kvq_nesting_depth(const char *text, size_t len, int json_strings) {
    int depth = 0, max = 0;
    int in_str = 0;
    for (size_t i = 0; i < len; i++) {
        const char c = text[i];
        if (in_str) {
            if (c == '\\') i++;
            else if (c == '"') in_str = 0;
            continue;
        }
        if (c == '"' && json_strings) in_str = 1;
        else if (c == '[' || c == '{') {
            if (++depth > max) max = depth;
        } else if ((c == ']' || c == '}') && depth > 0) depth--;
    }
    return max;
}
int kvq_max_indent(const char *text, size_t len) {
    int max = 0, col = 0, lead = 1;
    for (size_t i = 0; i < len; i++) {
        if (text[i] == '\n') {
            col = 0;
            lead = 1;
        } else if (lead && (text[i] == ' ' || text[i] == '\t')) {
            if (++col > max) max = col;
        } else lead = 0;
    }
    return max;
}
