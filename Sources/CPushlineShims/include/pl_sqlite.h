#ifndef PL_SQLITE_H
#define PL_SQLITE_H
#include <sqlite3.h>
/// SQLITE_TRANSIENT is a macro casting -1 to a function pointer, which Swift
/// cannot import: these bind with it so SQLite copies the bytes.
int pl_sqlite3_bind_text_transient(sqlite3_stmt *stmt, int index, const char *text, int len);
int pl_sqlite3_bind_blob_transient(sqlite3_stmt *stmt, int index, const void *data, int len);
/// sqlite3_config is variadic, which Swift cannot call: this turns memory
/// statistics off (SQLITE_CONFIG_MEMSTATUS 0), which removes a global mutex
/// round-trip from every SQLite allocation. Must run before sqlite3_initialize
/// (i.e. before the first connection is opened); returns the sqlite3_config code
/// (SQLITE_MISUSE if SQLite is already initialised, which is harmless).
int pl_sqlite3_disable_memstatus(void);
#endif
