function answer(r) {
    var ms = 50;
    var m = /delay_ms=(\d+)/.exec(r.variables.args || "");
    if (m) ms = parseInt(m[1]);
    setTimeout(function () {
        r.headersOut['apns-id'] = '7B1E5B6A-0000-4000-8000-000000000001';
        r.return(200);
    }, ms);
}
export default { answer };
