/* text.h — rules for text that users show to each other (post texts, display names, passwords).
 *
 * All functions take valid UTF-8 (check with jsonw_utf8_valid first) and never allocate.
 *  - White space is Unicode White_Space.
 *  - Invisible characters are those that render as nothing, often used to make a name or a post
 *    look empty or to impersonate: U+00AD, U+034F, U+061C, U+115F, U+1160, U+17B4, U+17B5,
 *    U+180B-U+180F, U+200B-U+200F, U+2060-U+2064, U+206A-U+206F, U+2800 (Braille blank), U+3164,
 *    U+FE00-U+FE0F, U+FEFF, U+FFA0, U+FFF9-U+FFFB, U+13430-U+1345F, U+1BCA0-U+1BCA3,
 *    U+1D173-U+1D17A, and the tags and variation selectors U+E0000-U+E0FFF. Combining marks of the
 *    main blocks (U+0300-U+036F, U+0483-U+0489, U+1AB0-U+1AFF, U+1DC0-U+1DFF, U+20D0-U+20FF,
 *    U+FE20-U+FE2F) draw nothing alone: a text of only these, invisible characters and white space
 *    is blank.
 *  - Controls: C0 (U+0000-U+001F), DEL and C1 (U+0080-U+009F).
 *  - Bidirectional controls that reorder the text around them (Trojan Source, CVE-2021-42574):
 *    the embeddings and overrides U+202A-U+202E and the isolates U+2066-U+2069. The marks U+200E,
 *    U+200F and U+061C change no order beyond one character and are allowed in text. */
#ifndef AGORA_APP_TEXT_H
#define AGORA_APP_TEXT_H
#include <stddef.h>

/* Removes leading and trailing white space of s[0,*n); returns the new start and sets *n. */
const char *text_trim(const char *s, size_t *n);
/* 1 if s[0,n) contains a bidirectional embedding, override or isolate control, else 0. */
int text_has_bidi_control(const char *s, size_t n);
/* 1 if s[0,n) has nothing visible: only white space and invisible characters (or nothing). */
int text_is_blank(const char *s, size_t n);
/* 1 if s[0,n) contains a control character (C0, DEL or C1), else 0. */
int text_has_control(const char *s, size_t n);
/* 1 if s[0,n) is only white space (or nothing). */
int text_is_space(const char *s, size_t n);

#endif
