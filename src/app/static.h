/* static.h — serves the web UI's files from a directory for GET and HEAD.
 *
 * "/" and any path ending in "/" map to index.html. The path is percent-decoded; a malformed
 * escape or a NUL is 400; any segment starting with "." (so "..", encoded or not, and hidden
 * files) or a backslash is 404, as is anything that is not a regular file. Files are read on each
 * request (they are small) and answered with Content-Type by extension, Cache-Control: no-cache,
 * and an ETag derived from size and modification time; If-None-Match with a matching tag gets
 * 304. Errors are JSON bodies {"error": ...}. */
#ifndef AGORA_APP_STATIC_H
#define AGORA_APP_STATIC_H
#include "http/message.h"

/* Answers req (a GET or HEAD for a path outside /api/) from the files under web_dir. */
void static_serve(const char *web_dir, const struct http_request *req, struct http_response *resp);
/* Returns the Content-Type for a file name by its extension. */
const char *static_content_type(const char *name);

#endif
