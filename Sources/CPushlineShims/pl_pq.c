#include "pl_pq.h"
#include <stddef.h>
const char *pl_pq_sqlstate(const PGresult *res) { return PQresultErrorField(res, PG_DIAG_SQLSTATE); }
const char *pl_pq_column_name(const PGresult *res) { return PQresultErrorField(res, PG_DIAG_COLUMN_NAME); }
const char *pl_pq_constraint_name(const PGresult *res) { return PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME); }
static void pl_pq_ignore_notice(void *arg, const char *message) { (void)arg; (void)message; }
void pl_pq_silence_notices(PGconn *conn) { PQsetNoticeProcessor(conn, pl_pq_ignore_notice, NULL); }
const char *pl_pq_primary_message(const PGresult *res) { return PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY); }
