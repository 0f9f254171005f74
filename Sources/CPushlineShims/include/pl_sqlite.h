#ifndef PL_SQLITE_H
#define PL_SQLITE_H
#include <sqlite3.h>
/// SQLITE_TRANSIENT is a macro casting -1 to a function pointer, which Swift
/// cannot import: these bind with it so SQLite copies the bytes.
int pl_sqlite3_bind_text_transient(sqlite3_stmt *stmt, int index, const char *text, int len);
int pl_sqlite3_bind_blob_transient(sqlite3_stmt *stmt, int index, const void *data, int len);
#endif
