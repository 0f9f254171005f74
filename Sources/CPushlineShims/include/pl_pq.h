#ifndef PL_PQ_H
#define PL_PQ_H
#include <libpq-fe.h>
/// PG_DIAG_SQLSTATE and PG_DIAG_* are character-literal macros ('C'), which Swift does not
/// import: these read one diagnostic field of a failed result (NULL when absent).
const char *pl_pq_sqlstate(const PGresult *res);
const char *pl_pq_column_name(const PGresult *res);
const char *pl_pq_constraint_name(const PGresult *res);
/// The primary message only (PG_DIAG_MESSAGE_PRIMARY): PQresultErrorMessage adds the DETAIL
/// line, which for a unique violation quotes the key, i.e. a full device token.
const char *pl_pq_primary_message(const PGresult *res);
/// libpq's default notice processor writes NOTICEs to stderr (e.g. "relation already exists,
/// skipping"); the daemon's stderr is its log, so notices are dropped. A C function because a
/// Swift closure passed as the processor would need no context anyway, and this keeps the
/// PQnoticeProcessor typedef out of Swift.
void pl_pq_silence_notices(PGconn *conn);
#endif
