// Delayed answers for the benchmark sink (LATENCY_MS > 0): the status comes from $sink_status,
// the body (none if empty) from $sink_body, the delay from $sink_latency_ms. An answer without a
// body has content-length 0, which nginx sends as one HEADERS frame with END_STREAM.
function respond(r) {
    var status = Number(r.variables.sink_status);
    var body = r.variables.sink_body || "";
    setTimeout(function () {
        if (body.length) {
            r.return(status, body);
        } else {
            r.return(status);
        }
    }, Number(r.variables.sink_latency_ms));
}

export default { respond };
