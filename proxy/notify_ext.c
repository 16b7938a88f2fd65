/*
 * notify_ext.c - a prepared LISTEN or UNLISTEN (the extended protocol) in
 * transaction and statement mode.
 *
 * asyncpg (add_listener), pgjdbc and others send LISTEN as Parse [Describe
 * statement] Flush/Sync, then Bind [Describe portal] Execute Sync, or all
 * of it at once.  A batch that is only that, on a lone LISTEN or UNLISTEN
 * without parameters, is answered here (ParseComplete, ParameterDescription
 * and NoData, BindComplete, NoData) and its Execute runs like the simple
 * Query (notify.c): the statement is the session's (a virtual one, a
 * "vstmt"), reused by later Binds of its name.  PostgreSQL would refuse a
 * bad LISTEN at its Parse; here the error comes at the Execute.  Anything
 * else in the batch: the server gets all of it, as before.
 *
 * The batch is read first (ext_read: the messages, the replies they get),
 * then taken (ext_take: the buffer drops it, the replies go out, the
 * statement runs).  State: the session's vstmt table (s->notify->vst).
 */
#include "proxy/notify_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/array.h"
#include "common/wire.h"
#include "proxy/prepared.h"

/* ---- the client's messages ---- */

struct fe_msg {
    char type;
    const uint8_t *body;
    uint32_t len;
};

/* The bytes of a message of a lone LISTEN's batch, at most: a Parse's text
 * is read whole up to what a Query's is (whole in the relay's buffer). */
#define EXT_MSG_MAX (PGW_MSG_HDR + PGW_NOTIFY_QUERY_MAX)

/* The message at off, whole; 0 when not all there, -1 when not sane. */
static int fe_next(const struct pgw_iobuf *b, uint32_t off, struct fe_msg *m)
{
    if (b->len - off < PGW_MSG_HDR)
        return 0;
    uint32_t mlen = pgw_get_u32(b->data + off + 1);
    if (mlen < 4 || mlen > EXT_MSG_MAX - 1)
        return -1;                /* longer than a Query pgwharf reads: not ours */
    if (b->len - off < mlen + 1)
        return 0;
    m->type = (char)b->data[off];
    m->body = b->data + off + PGW_MSG_HDR;
    m->len = mlen - 4;
    return 1;
}

/* A NUL-terminated string at *pos of body; NULL when there is none. */
static const char *fe_str(const struct fe_msg *m, uint32_t *pos)
{
    if (*pos >= m->len)
        return NULL;
    const char *str = (const char *)m->body + *pos;
    const void *nul = memchr(str, '\0', m->len - *pos);
    if (!nul)
        return NULL;
    *pos += (uint32_t)((const char *)nul - str) + 1;
    return str;
}

static bool fe_i16(const struct fe_msg *m, uint32_t *pos, int *v)
{
    if (*pos + 2 > m->len)
        return false;
    *v = (int)((uint16_t)m->body[*pos] << 8 | m->body[*pos + 1]);
    *pos += 2;
    return true;
}

/* ---- the session's virtual statements ---- */

/* Statement and portal names are the same for PostgreSQL when their keys
 * are (pgw_notify_stmt_key: the first NAMEDATALEN - 1 bytes in the
 * database's encoding; its tables of them keep no more: a Parse of a
 * longer name makes the statement of its first 63 bytes there; a Bind,
 * Close or SQL DEALLOCATE of any name with those bytes finds it).  Names
 * here are keys. */
static bool name_eq(const char *a, const char *b)
{
    return strcmp(a, b) == 0;
}

/* The NUL-terminated name at *pos of m, as its key; false when there is
 * none, or it does not convert (the server reports it). */
static bool fe_key(const struct pgw_session *s, const struct fe_msg *m, uint32_t *pos,
                   char key[NOTIFY_STMT_NAME_MAX + 1])
{
    const char *name = fe_str(m, pos);
    return name && pgw_notify_stmt_key(s, name, strlen(name), true, key);
}

static struct notify_vstmt *vstmt_find(struct pgw_notify_sub *sub, const char *name)
{
    for (int i = 0; sub && i < sub->nvst; i++)
        if (name_eq(sub->vst[i].name, name))
            return &sub->vst[i];
    return NULL;
}

static void vstmt_drop(struct pgw_notify_sub *sub, const char *name)
{
    struct notify_vstmt *v = vstmt_find(sub, name);
    if (v) {
        free(v->sql);
        *v = sub->vst[--sub->nvst];
    }
}

void pgw_notify_vstmt_clear(struct pgw_notify_sub *sub)
{
    for (int i = 0; i < sub->nvst; i++)
        free(sub->vst[i].sql);
    sub->nvst = 0;
    sub->has_held = false;
}

bool pgw_notify_vstmt_to_server(struct pgw_session *s, const char *key)
{
    struct notify_vstmt *v = vstmt_find(s->notify, key);
    if (!v || !s->ps_on || !key[0])
        return true;             /* max_prepared_statements = 0, or the unnamed statement
                                    (prepared.c leaves it to the server): the server
                                    reports it, and the vstmt stays */
    if (!pgw_ps_adopt(s, v->name, v->sql))
        return false;
    vstmt_drop(s->notify, key);
    return true;
}

void pgw_notify_unnamed_gone(struct pgw_session *s)
{
    if (s->notify)
        vstmt_drop(s->notify, "");   /* the sub goes at the ReadyForQuery if that was all */
}

bool pgw_notify_vstmt_has(struct pgw_notify_sub *sub, const char *name)
{
    return vstmt_find(sub, name) != NULL;
}

bool pgw_notify_vstmt_forget(struct pgw_notify_sub *sub, const char *name)
{
    if (!vstmt_find(sub, name))
        return false;
    vstmt_drop(sub, name);
    return true;
}

/* in, with its text sql (copied), into sub's table. */
static bool vstmt_put(struct pgw_notify_sub *sub, const struct notify_vstmt *in, const char *sql)
{
    char *text = strdup(sql);
    if (!text)
        return false;
    struct notify_vstmt *v = vstmt_find(sub, in->name);
    if (!v) {
        v = pgw_array_grow(sub->vst, sizeof(*v), (size_t)sub->nvst, &sub->capvst, 2);
        if (!v) {
            free(text);
            return false;
        }
        sub->vst = v;
        v = &sub->vst[sub->nvst++];
    } else {
        free(v->sql);
    }
    *v = *in;
    v->sql = text;
    return true;
}

/* The statement name at msg + off of a message a server gets (avail of
 * its total bytes there): a vstmt's statement goes to prepared.c first.
 * false: read more of it first. */
static bool name_to_server(struct pgw_session *s, const uint8_t *msg, uint32_t avail,
                           uint32_t total, uint32_t off)
{
    if (!s->notify || s->notify->nvst == 0 || !s->ps_on)
        return true;
    const char *at = (const char *)msg + off, *end = (const char *)msg + avail;
    const char *nul = avail > off ? memchr(at, '\0', (size_t)(end - at)) : NULL;
    if (!nul)
        return avail >= total;           /* read more of it first; or the server reports it */
    char key[NOTIFY_STMT_NAME_MAX + 1];
    if (nul > at && pgw_notify_stmt_key(s, at, (size_t)(nul - at), true, key) &&
        !pgw_notify_vstmt_to_server(s, key))
        pgw_session_close(s, "53200", "out of memory");
    return true;
}

bool pgw_notify_tx_describe(struct pgw_session *s, const uint8_t *msg, uint32_t avail,
                            uint32_t total)
{
    if (avail > PGW_MSG_HDR && msg[PGW_MSG_HDR] != 'S')
        return true;                     /* a portal's */
    return name_to_server(s, msg, avail, total, PGW_MSG_HDR + 1);
}

bool pgw_notify_tx_parse(struct pgw_session *s, const uint8_t *msg, uint32_t avail,
                         uint32_t total)
{
    return name_to_server(s, msg, avail, total, PGW_MSG_HDR);
}

void pgw_notify_close(struct pgw_session *s, const uint8_t *msg, uint32_t n)
{
    struct pgw_notify_sub *sub = s->notify;
    if (!sub || sub->nvst == 0 || n < PGW_MSG_HDR + 2 || msg[PGW_MSG_HDR] != 'S')
        return;
    /* Its first NOTIFY_STMT_NAME_READ bytes give all PostgreSQL reads of
     * the name. */
    char name[NOTIFY_STMT_NAME_MAX + 1];
    const char *at = (const char *)msg + PGW_MSG_HDR + 1;
    size_t len = n - PGW_MSG_HDR - 1;
    const char *nul = memchr(at, '\0', len);
    if (!nul && len < NOTIFY_STMT_NAME_READ)
        return;                  /* not a name: the server reports it */
    if (!pgw_notify_stmt_key(s, at, nul ? (size_t)(nul - at) : len, nul != NULL, name))
        return;                  /* PostgreSQL refuses it */
    vstmt_drop(sub, name);       /* the sub goes at the ReadyForQuery if that was all */
}

/* ---- reading the batch ---- */

/* The Parse at the head of the batch, read: 1 a lone LISTEN/UNLISTEN
 * without parameters (into v, and into full its name as written when
 * PostgreSQL cuts it), 0 another statement. */
static int parse_listen(const struct pgw_session *s, const struct fe_msg *m,
                        struct notify_vstmt *v, struct pgw_ident_full *full)
{
    uint32_t pos = 0, at;
    int nparams;
    const char *name = fe_str(m, &pos);
    if (!name || pos >= m->len ||
        !pgw_notify_may_be_listen((const char *)m->body + pos,
                                  m->len - pos < 16 ? m->len - pos : 16))
        return 0;                 /* the common case: another statement */
    const char *sql = fe_str(m, &pos);
    if (!sql || !fe_i16(m, &pos, &nparams) || nparams != 0)
        return 0;
    at = 0;
    if (!fe_key(s, m, &at, v->name))
        return 0;
    v->sql = (char *)sql;         /* the message's: vstmt_put copies it */
    bool converted;     /* the hub runs its own LISTEN "chan" here anyway */
    v->kind = pgw_notify_parse(s, sql, strlen(sql), v->chan, &converted, full);
    return v->kind != PGW_LISTEN_NONE;
}

/* A Bind or a Describe at p (have bytes of it here) may be of a kept
 * prepared LISTEN: its statement's name is not all here yet, or names
 * one; or a Describe of the portal held. */
static bool may_use_vstmt(const struct pgw_session *s, const uint8_t *p, size_t have)
{
    const uint8_t *at = p + PGW_MSG_HDR, *end = p + have;
    if ((char)p[0] == PGW_FE_DESCRIBE && at < end && *at != 'S')
        return *at == 'P' && pgw_notify_portal_held(s);
    if (!s->notify || s->notify->nvst == 0)
        return pgw_notify_portal_held(s) && (char)p[0] == PGW_FE_DESCRIBE && at >= end;
    if (at >= end)
        return true;
    if ((char)p[0] == PGW_FE_DESCRIBE) {
        at++;
    } else {
        const uint8_t *z = memchr(at, '\0', (size_t)(end - at));   /* the portal's */
        if (!z)
            return true;
        at = z + 1;
    }
    const uint8_t *nul = at < end ? memchr(at, '\0', (size_t)(end - at)) : NULL;
    if (!nul)
        return true;
    char key[NOTIFY_STMT_NAME_MAX + 1];
    return pgw_notify_stmt_key(s, (const char *)at, (size_t)(nul - at), true, key) &&
           vstmt_find(s->notify, key) != NULL;
}

/* The first message of a batch, not all here, may be one pgwharf answers:
 * a Parse whose name and the start of its text are there, the text
 * starting LISTEN or UNLISTEN; a Bind or Describe of a kept prepared
 * LISTEN, an Execute of a portal held (a client that pipelines has its
 * writes cut anywhere by the reads; fe_next refuses one too long to be
 * pgwharf's). */
static bool first_may_be_listen(const struct pgw_session *s, const struct pgw_iobuf *b)
{
    const uint8_t *p = b->data + b->parsed;
    size_t have = b->len - b->parsed;
    if ((char)p[0] == PGW_FE_BIND || (char)p[0] == PGW_FE_DESCRIBE)
        return may_use_vstmt(s, p, have);
    if ((char)p[0] == PGW_FE_EXECUTE)
        return pgw_notify_portal_held(s);
    if ((char)p[0] != PGW_FE_PARSE || have <= PGW_MSG_HDR)
        return false;
    const uint8_t *nul = memchr(p + PGW_MSG_HDR, '\0', have - PGW_MSG_HDR);
    if (!nul || nul + 1 >= p + have)
        return false;
    return pgw_notify_may_be_listen((const char *)nul + 1, (size_t)(p + have - (nul + 1)));
}

/* A batch read so far: the one statement it uses, what it did with it,
 * and pgwharf's replies to its messages. */
struct ext_batch {
    const struct pgw_session *s;
    struct notify_vstmt cur;
    bool have;                    /* cur is set: parsed here, or a vstmt bound */
    bool parsed, bound, executed, synced;
    int closes;                   /* of its portal or statement, after the Execute */
    bool close_stmt;              /* ... one of them of its statement */
    char portal[NOTIFY_STMT_NAME_MAX + 1];
    uint32_t end;                 /* in the client's buffer: after the last message read */
    struct pgw_wbuf out;
};

static bool ext_parse(struct ext_batch *x, const struct fe_msg *m)
{
    struct pgw_ident_full full = { .cut = false };
    if (x->have || !parse_listen(x->s, m, &x->cur, &full))
        return false;
    x->have = x->parsed = true;
    /* PostgreSQL's scanner reads the name at the Parse: its NOTICE there. */
    pgw_notify_truncated(x->s, &x->out, &full, x->cur.chan);
    pgw_ident_full_free(&full);
    pgw_wbuf_msg_end(&x->out, pgw_wbuf_msg_begin(&x->out, PGW_BE_PARSE_COMPLETE));
    return true;
}

/* A Bind of the batch's statement, or of a vstmt, without parameters. */
static bool ext_bind(struct ext_batch *x, struct pgw_notify_sub *sub, const struct fe_msg *m)
{
    uint32_t pos = 0;
    int n;
    char portal[NOTIFY_STMT_NAME_MAX + 1], name[NOTIFY_STMT_NAME_MAX + 1];
    if (x->bound || !fe_key(x->s, m, &pos, portal) || !fe_key(x->s, m, &pos, name))
        return false;
    if (!x->have) {
        const struct notify_vstmt *v = vstmt_find(sub, name);
        if (!v)
            return false;
        x->cur = *v;
        x->have = true;
    } else if (!name_eq(name, x->cur.name)) {
        return false;
    }
    if (!fe_i16(m, &pos, &n))               /* parameter formats */
        return false;
    pos += 2 * (uint32_t)n;
    if (!fe_i16(m, &pos, &n) || n != 0)     /* no parameters */
        return false;
    memcpy(x->portal, portal, sizeof(x->portal));
    x->bound = true;
    pgw_wbuf_msg_end(&x->out, pgw_wbuf_msg_begin(&x->out, PGW_BE_BIND_COMPLETE));
    return true;
}

/* Describe of the statement (no parameters, no rows) or of its portal (no
 * rows), before the Execute; of a vstmt first in the batch, it becomes
 * the batch's statement. */
static bool ext_describe(struct ext_batch *x, struct pgw_notify_sub *sub, const struct fe_msg *m)
{
    uint32_t pos = 1;
    char name[NOTIFY_STMT_NAME_MAX + 1];
    if (m->len < 2 || x->executed || !fe_key(x->s, m, &pos, name))
        return false;
    if (!x->have) {
        const struct notify_vstmt *v = m->body[0] == 'S' ? vstmt_find(sub, name) : NULL;
        if (!v)
            return false;
        x->cur = *v;
        x->have = true;
    }
    if (m->body[0] == 'S' && name_eq(name, x->cur.name)) {
        size_t at = pgw_wbuf_msg_begin(&x->out, 't');
        pgw_wbuf_put_u16(&x->out, 0);
        pgw_wbuf_msg_end(&x->out, at);
    } else if (m->body[0] != 'P' || !x->bound || !name_eq(name, x->portal)) {
        return false;
    }
    pgw_wbuf_msg_end(&x->out, pgw_wbuf_msg_begin(&x->out, 'n'));
    return true;
}

static bool ext_execute(struct ext_batch *x, const struct fe_msg *m)
{
    uint32_t pos = 0;
    char portal[NOTIFY_STMT_NAME_MAX + 1];
    if (!x->bound || x->executed || !fe_key(x->s, m, &pos, portal) ||
        !name_eq(portal, x->portal))
        return false;
    x->executed = true;
    return true;
}

/* A Close after the Execute of its portal or its statement (a driver
 * that closes what it ran: Bind, Execute, Close, Sync): PostgreSQL answers
 * CloseComplete after the Execute's CommandComplete, and closes nothing
 * when the Execute failed (the rest of the batch skipped).  A Close of
 * anything else may be of the server's: the server gets the batch. */
#define EXT_CLOSES_MAX 8

static bool ext_close(struct ext_batch *x, const struct fe_msg *m)
{
    uint32_t pos = 1;
    char name[NOTIFY_STMT_NAME_MAX + 1];
    if (!x->executed || x->closes >= EXT_CLOSES_MAX || m->len < 2 || !fe_key(x->s, m, &pos, name) ||
        pos != m->len)
        return false;
    if (m->body[0] == 'S' && name_eq(name, x->cur.name))
        x->close_stmt = true;
    else if (m->body[0] != 'P' || !name_eq(name, x->portal))
        return false;
    x->closes++;
    return true;
}

/* One message of the batch: false when it has no place in a lone LISTEN's
 * batch (after the Execute, only a Close of what it ran and a Sync have). */
static bool ext_msg(struct ext_batch *x, struct pgw_notify_sub *sub, const struct fe_msg *m)
{
    switch (m->type) {
    case PGW_FE_PARSE:
        return ext_parse(x, m);
    case PGW_FE_BIND:
        return ext_bind(x, sub, m);
    case PGW_FE_DESCRIBE:
        return ext_describe(x, sub, m);
    case PGW_FE_EXECUTE:
        return ext_execute(x, m);
    case PGW_FE_CLOSE:
        return ext_close(x, m);
    /* (One with a body, which PostgreSQL answers with 08P01: the
     * server's to answer.) */
    case PGW_FE_FLUSH:
        return !x->executed && m->len == 0;   /* its reply needs a Sync */
    case PGW_FE_SYNC:
        x->synced = true;
        return m->len == 0;
    default:
        return false;
    }
}

/* The message at off is not all there: room for it whole in s's buffer
 * (grown when the batch before it leaves too little: a Parse near
 * EXT_MSG_MAX and the rest of its batch); false when there is none. */
static bool ext_room(struct pgw_session *s, uint32_t off)
{
    const struct pgw_iobuf *b = s->cbuf;
    uint32_t need = b->len - off < PGW_MSG_HDR ? PGW_MSG_HDR
                                               : pgw_get_u32(b->data + off + 1) + 1;
    need += off - b->sent;
    return need <= b->cap || pgw_iobuf_reserve(s->px, &s->cbuf, need);
}

/* Read the batch at the head of s's buffer, up to its Flush or Sync, into
 * x: 1 when it is a lone LISTEN's or UNLISTEN's, 0 when not (the server
 * gets it), PGW_NOTIFY_MORE when its rest may still come (s->cbuf may
 * then be another, larger buffer). */
static int ext_read(struct pgw_session *s, struct ext_batch *x)
{
    const struct pgw_iobuf *b = s->cbuf;
    x->end = b->parsed;
    for (;;) {
        struct fe_msg m;
        int r = fe_next(b, x->end, &m);
        /* The first message not all there: wait only for what its first
         * bytes say may be a LISTEN (a client that stops after a header
         * takes a server, under query_timeout, as before). */
        if (r == 0 && x->end == b->parsed && !first_may_be_listen(s, b))
            return 0;
        if (r == 0)                                  /* the rest may still come */
            return ext_room(s, x->end) ? PGW_NOTIFY_MORE : 0;
        if (r < 0)
            return 0;
        if (!ext_msg(x, s->notify, &m))
            return 0;
        x->end += m.len + PGW_MSG_HDR;
        if (m.type == PGW_FE_FLUSH || m.type == PGW_FE_SYNC)
            return 1;
    }
}

/* ---- taking it ---- */

static int close_oom(struct pgw_session *s)
{
    pgw_session_close(s, "53200", "out of memory");
    return -1;
}

/* Answer the batch x read: the client's buffer drops it, the statement
 * becomes the session's (Parse), its UNLISTEN runs or its LISTEN goes to
 * the hub (Execute), the replies go out.  1 when taken, 0 when the server
 * gets it after all (a LISTEN with no room for a listening server), -1
 * when s was closed. */
static int ext_take(struct pgw_session *s, struct ext_batch *x)
{
    if (x->out.failed)
        return close_oom(s);
    bool listen = x->cur.kind == PGW_LISTEN;
    /* A pool of one server: a LISTEN runs there, and so does an UNLISTEN
     * of a client that has no hub state (it would make a hub). */
    if ((listen || !s->notify) && !pgw_notify_room_for_hub(s))
        return 0;
    struct pgw_notify_sub *sub = pgw_notify_sub_get(s);
    if (!sub || (x->parsed && !vstmt_put(sub, &x->cur, x->cur.sql)))
        return close_oom(s);
    struct notify_req *r = NULL;
    if (x->executed && listen &&
        !(r = pgw_notify_listen_req(x->cur.chan, x->closes, x->close_stmt ? x->cur.name : NULL)))
        return close_oom(s);
    struct pgw_iobuf *b = s->cbuf;
    pgw_iobuf_cut(b, b->parsed, x->end - b->parsed);
    if (x->synced)
        s->query_count++;        /* as a server's batch counts: at its Sync */
    if (x->executed && !listen) {
        pgw_notify_unlisten(sub, x->cur.kind, x->cur.chan);
        pgw_wire_command_complete(&x->out, "UNLISTEN");
        pgw_notify_closes(sub, &x->out, x->closes, x->close_stmt ? x->cur.name : NULL);
    }
    /* Bound and flushed, not executed yet: the portal waits for the next
     * batch's Execute (a Sync ends it, as the end of PostgreSQL's implicit
     * transaction drops it). */
    sub->has_held = x->bound && !x->executed && !x->synced;
    if (sub->has_held) {
        sub->held = x->cur;
        sub->held.sql = NULL;
        memcpy(sub->held_portal, x->portal, sizeof(sub->held_portal));
    }
    if (x->synced && !r) {
        pgw_wire_ready(&x->out, 'I');
        pgw_metrics_xact_end(s);         /* as PostgreSQL's 'I' would count */
    }
    if (x->out.failed) {
        free(r);
        return close_oom(s);
    }
    if (x->out.len > 0)          /* (a held portal's Execute: all from the hub) */
        pgw_notify_send(s, x->out.data, x->out.len);
    if (s->state == PGW_SS_CLOSING) {
        free(r);
        return -1;
    }
    if (r)
        pgw_notify_ask(s, r);     /* its CommandComplete and ReadyForQuery come from the hub */
    else if (pgw_notify_sub_idle(sub))
        pgw_notify_session_gone(s);   /* an UNLISTEN and a Close of its statement:
                                         nothing kept */
    return s->state == PGW_SS_CLOSING ? -1 : 1;
}

/* A Parse at the head that the server gets takes its name from a vstmt
 * (the unnamed one, always). */
static void forget_head_name(struct pgw_session *s)
{
    struct fe_msg m;
    uint32_t pos = 0;
    char name[NOTIFY_STMT_NAME_MAX + 1];
    if (s->notify && fe_next(s->cbuf, s->cbuf->parsed, &m) > 0 && m.type == PGW_FE_PARSE &&
        fe_key(s, &m, &pos, name))
        vstmt_drop(s->notify, name);
}

/* A Parse at the head of a statement name the client keeps a prepared
 * LISTEN or UNLISTEN under: PostgreSQL refuses it (42P05, the statement
 * stays), so does pgwharf.  1 when refused, 0 when not such a Parse, -1
 * when s was closed. */
static int parse_of_kept_name(struct pgw_session *s)
{
    struct fe_msg m;
    uint32_t pos = 0;
    char key[NOTIFY_STMT_NAME_MAX + 1];
    const struct pgw_iobuf *b = s->cbuf;
    if (!s->notify || s->notify->nvst == 0 || fe_next(b, b->parsed, &m) <= 0 ||
        m.type != PGW_FE_PARSE || !fe_key(s, &m, &pos, key) || !key[0] ||
        !vstmt_find(s->notify, key))
        return 0;
    char msg[1100];
    snprintf(msg, sizeof(msg), "prepared statement \"%.1000s\" already exists",
             (const char *)m.body);
    pgw_relay_refuse(s, "42P05", msg);
    return s->state == PGW_SS_CLOSING ? -1 : 1;
}

/* A Parse at the head of a statement name the client has a prepared
 * statement under (prepared.c's): not pgwharf's to answer, whatever its
 * text: PostgreSQL refuses it (42P05, the statement stays), and so does
 * the prepared-statement layer on the server's way.  (Taken for a LISTEN
 * of pgwharf's own, it was accepted and replaced the statement.) */
static bool parse_of_client_name(struct pgw_session *s)
{
    struct fe_msg m;
    uint32_t pos = 0;
    const struct pgw_iobuf *b = s->cbuf;
    if (!s->ps_client || fe_next(b, b->parsed, &m) <= 0 || m.type != PGW_FE_PARSE)
        return false;
    const char *name = fe_str(&m, &pos);
    return name && *name && pgw_ps_client_has(s, name);
}

int pgw_notify_ext_batch(struct pgw_session *s)
{
    int refused = parse_of_kept_name(s);
    if (refused != 0)
        return refused;
    if (parse_of_client_name(s))
        return 0;
    struct ext_batch x = { .s = s, .have = false };
    /* The portal a batch before bound and flushed, when this one starts
     * with its Execute or Describe. */
    struct fe_msg m;
    if (s->notify && s->notify->has_held && fe_next(s->cbuf, s->cbuf->parsed, &m) > 0 &&
        (m.type == PGW_FE_EXECUTE || (m.type == PGW_FE_DESCRIBE && m.len > 0 &&
                                      m.body[0] == 'P'))) {
        x.cur = s->notify->held;
        memcpy(x.portal, s->notify->held_portal, sizeof(x.portal));
        x.have = x.bound = true;
    }
    pgw_wbuf_init(&x.out);
    int rc = ext_read(s, &x);
    if (rc == 1)
        rc = ext_take(s, &x);
    pgw_wbuf_deinit(&x.out);
    if (rc == 0) {
        forget_head_name(s);
        if (s->notify)
            s->notify->has_held = false;   /* (the server gets the batch: a gap) */
    }
    return rc;
}
