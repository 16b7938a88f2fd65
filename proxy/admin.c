/*
 * admin.c - the admin console: the virtual database "pgwharf" (also
 * "pgbouncer").  Simple query protocol only.
 */
#include "proxy/proxy_int.h"

#include <string.h>

#include "common/log.h"
#include "proxy/codec.h"

void pgw_admin_login(struct pgw_session *s)
{
    const struct pgw_config *cfg = s->px->cfg;
    bool admin = pgw_conf_list_has(cfg->admin_users, s->user);
    bool stats = pgw_conf_list_has(cfg->stats_users, s->user);
    if (!admin && !stats) {
        pgw_session_close(s, "42501", "not allowed to connect to the admin console: \"%s\"", s->user);
        return;
    }
    s->admin_can_write = admin;
    struct pgw_wbuf b;
    pgw_wbuf_init(&b);
    pgw_wire_param_status(&b, "server_version", PGW_VERSION "/pgwharf");
    pgw_wire_param_status(&b, "client_encoding", "UTF8");
    pgw_wire_param_status(&b, "server_encoding", "UTF8");
    pgw_wire_param_status(&b, "DateStyle", "ISO, MDY");
    pgw_wire_param_status(&b, "standard_conforming_strings", "on");
    pgw_wire_key_data(&b, s->cancel_pid, s->cancel_key);
    pgw_wire_ready(&b, 'I');
    s->state = PGW_SS_ADMIN;
    pgw_session_send(s, &b);
    pgw_wbuf_deinit(&b);
}

void pgw_admin_input(struct pgw_session *s)
{
    struct pgw_iobuf *b = s->cbuf;
    while (s->state == PGW_SS_ADMIN && b->sent < b->len) {
        long n = pgw_msg_complete(b->data + b->sent, b->len - b->sent, 1u << 20);
        if (n < 0) {
            pgw_session_close(s, "08P01", "invalid message length");
            return;
        }
        if (n == 0)
            return;
        uint8_t type = b->data[b->sent];
        b->sent += (uint32_t)n;
        b->parsed = b->sent;
        if (type == PGW_FE_TERMINATE) {
            pgw_session_close(s, NULL, "client terminated");
            return;
        }
        struct pgw_wbuf out;
        pgw_wbuf_init(&out);
        if (type == PGW_FE_QUERY) {
            pgw_wire_error(&out, "ERROR", "0A000", "admin console commands are not implemented yet");
            pgw_wire_ready(&out, 'I');
        } else {
            pgw_wire_error(&out, "ERROR", "08P01", "the admin console takes simple queries only");
            pgw_wire_ready(&out, 'I');
        }
        pgw_session_send(s, &out);
        pgw_wbuf_deinit(&out);
    }
    if (s->state == PGW_SS_ADMIN && b->sent == b->len)
        b->sent = b->parsed = b->len = 0;
}
