/* Bounds on untrusted structured text, checked before a parser sees it:
 * libyaml's scanner is quadratic in the nesting depth of flow collections
 * (200 KB of '[' took 37 s), and recursive parsers use stack per level. */
#ifndef KVQ_CORE_NESTING_H
#define KVQ_CORE_NESTING_H
#include <stddef.h>

/* The deepest nesting of [ ] and { }. With json_strings, brackets inside
 * JSON strings do not count; without (YAML), every bracket counts, since a
 * YAML quote or comment is context-dependent and an over-count is safe. */
int kvq_nesting_depth(const char *text, size_t len, int json_strings);
/* The widest leading indentation of any line, in columns: YAML block
 * collections nest by indenting. */
int kvq_max_indent(const char *text, size_t len);

#endif
