/*
 * prepared.c - named prepared statements across pooled servers (see
 * prepared.h).  Owns the statement registry (per proxy), each client's
 * name map, each server's LRU of prepared statements (srv->user_state) and
 * each session's queue of expected responses.
 */
#include "proxy/prepared.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/array.h"
#include "common/err.h"
#include "common/hmap.h"
#include "common/log.h"
#include "proxy/codec.h"
#include "proxy/proxy_int.h"

/* ---- walking a hash map ---- */

/* Every entry of a hash map (NULL: none), in any order, as w.node; the
 * loop body may remove and free that entry (the next one is found
 * first), but no other. */
struct hmap_walk {
    const struct pgw_hmap *m;
    size_t bucket;
    struct pgw_hnode *node, *next;
    bool started;
};

static bool hmap_walk_step(struct hmap_walk *w)
{
    if (!w->m)
        return false;
    if (!w->started) {
        w->started = true;
        w->next = pgw_hmap_iter(w->m, &w->bucket, NULL);
    }
    w->node = w->next;
    if (w->node)
        w->next = pgw_hmap_iter(w->m, &w->bucket, w->node);
    return w->node != NULL;
}

#define HMAP_WALK(w, map) for (struct hmap_walk w = { .m = (map) }; hmap_walk_step(&w);)

/* ---- the registry: one entry per distinct (text, parameter types,
 * settings the text is read with) ---- */

struct ps_stmt {
    struct pgw_hnode hnode;
    uint64_t id;
    uint64_t ctx;                /* parse_context of the clients that share it */
    char name[24];               /* "PGW_<id>" */
    uint8_t *parse;              /* the whole Parse message under that name */
    uint32_t parse_len;
    uint32_t key_off, key_len;   /* text + types inside parse */
    int refs;                    /* client names + servers + queue entries */
    /* What PostgreSQL checks before it refuses the statement in a failed
     * transaction, learnt by a Describe pgwharf sends once, ahead of a
     * Bind or Describe of it (failed_tx_answer). */
    bool described;              /* learnt */
    bool describing;             /* that Describe is on its way */
    bool rows;                   /* it returns rows (RowDescription, not NoData) */
    uint16_t nparams;            /* its parameters, as the server counts them */
    uint8_t *pdesc;              /* its ParameterDescription, the whole message */
    uint32_t pdesc_len;
    /* The Parse with the parameter types of pdesc (NULL: parse's own are
     * those): what servers that prepare it later get.  PostgreSQL keeps a
     * prepared statement's parameter types when its tables change; a
     * server preparing it after an ALTER TABLE would otherwise read the
     * client's binary parameters as the new types (an int8 as a float8). */
    uint8_t *pinned;
    uint32_t pinned_len;
    uint32_t words;              /* pgw_relay_text_words of its text, all tracked */
    bool words_known;            /* ... worked out (at its first Bind) */
    /* A server answered 0A000 "cached plan must not change result type"
     * for it: its plan is an old reading of tables since changed, maybe on
     * every server that has it.  A new Parse of the text is not given it
     * (stmt_get) but a statement of its own, read afresh wherever it is
     * prepared, as PostgreSQL reads a new Parse; the names that have it
     * keep it (each server's copy stays until its LRU drops it). */
    bool retired;
    /* Its result's shape (row_shape): what the first Describe pgwharf
     * sent of it said, learnt with pdesc (or by a check_describe).  As in
     * PostgreSQL, where a statement's result is fixed at its Parse: a
     * server that reads the text later, its tables changed since, must not
     * give its clients another (shape_fail). */
    bool shaped;
    uint64_t shape;
    /* A server took a Parse of it (ParseComplete), and none has refused
     * one since for its text (text_error): a client with no server may
     * have its prepare of it answered by pgwharf (pgw_ps_parse_alone). */
    bool parsed_ok;
};

struct ps_registry {
    struct pgw_hmap map;
    uint64_t next_id;
    struct pgw_ps_stats st;
};

struct ps_client_name {
    struct pgw_hnode hnode;
    struct ps_stmt *stmt;
    /* Given by pgw_ps_parse_alone, with no server: no server has read the
     * text for it, and its reading is the one a server gives when it is
     * first prepared for it, as if the client's Parse were sent then
     * (unread_use): the statement of the client's settings then, read
     * afresh there even on a server that has it.  Cleared once that
     * reading is told (shape_seen), or at a first use with nothing to
     * read (a utility statement, whose result PostgreSQL never fixes). */
    bool unread;
    char name[];                 /* its key (name_key), a NUL, then the name as
                                  * the client's Parse gave it (names_shown) */
};

struct ps_client {
    struct pgw_hmap map;
};

struct ps_server_stmt {
    struct pgw_hnode hnode;
    struct pgw_list lru;         /* most recently used first */
    struct ps_stmt *stmt;
    bool stale;                  /* the server's plan is unusable: re-prepare */
    /* The shape of the result this server's copy gives (row_shape), when a
     * Describe of pgwharf's told it; else taken for its statement's. */
    bool read;
    uint64_t shape;
    /* ... told by the check a Bind or Describe waits for (check_held),
     * which fails at once if it differs (shape_fail); any other reading
     * that differs is read again before a message fails, so a copy read
     * while its tables were changed in a transaction later rolled back
     * (or a change undone) is read afresh, as PostgreSQL reads its own. */
    bool fresh;
};

struct ps_server {
    struct pgw_hmap map;
    struct pgw_list lru;
    int count;
    struct ps_registry *reg;
    /* Statements an injected Close did not reach (an earlier error made
     * the server skip it): the server may still have them, so they are
     * closed again before pgwharf prepares anything more there (Close of
     * an unknown name is no error), else a later Parse of the same name
     * fails with 42P05. */
    uint64_t *reclose;
    uint32_t nreclose;
    size_t capreclose;
};

/* Room one injected Close takes ("PGW_" and up to 20 digits). */
#define CLOSE_BYTES 40

/* ---- the queue of expected responses ---- */
#define PS_BNAME_MAX 64
enum { Q_PASS, Q_SWALLOW, Q_FAKE };
/* ps_queue.probe */
enum { PROBE_NONE, PROBE_OUT, PROBE_SKIP, PROBE_ERR_OUT };

struct qent {
    uint8_t kind;
    char type;                   /* the frontend message it answers */
    struct ps_stmt *stmt;        /* Parse: undone on error; Bind/Execute: stale plans;
                                  * a client's Close: what its name was */
    uint64_t close_id;           /* an injected Close: the statement's id */
    char *cname;                 /* a client's Parse: its name, gone if skipped;
                                  * a client's Close: its name, back if skipped;
                                  * its key, a NUL, then the name (names_dup) */
    char bname[PS_BNAME_MAX];    /* a Bind/Describe of stmt: the client's name, for
                                  * the server's errors quoting pgwharf's ("" if long) */
    struct ps_stmt *named;       /* ... a long one's, sent as another statement
                                  * (on_named): the client's, which its name has */
    bool dup;                    /* the Execute raising 42P05 (dup_error) */
    bool had;                    /* a Parse the server refuses (parse_refused):
                                  * its statement there stays */
    bool pinned;                 /* a Parse sent with its statement's pinned types */
    bool as_is;                  /* a client's named Parse sent unrenamed, for the
                                  * server to refuse (pgw_notify_stmt_key_of) */
    bool dealloc;                /* an unnamed Parse of SQL DEALLOCATE of the client's
                                  * name cname (stmt), sent as one of dealloc_stmt: the
                                  * name is gone, and back if the server skips or
                                  * refuses it (dealloc_parse) */
    uint32_t execs;              /* a Sync/Query/FunctionCall: the Executes of its
                                  * request, itself included if a Query */
    bool learn;                  /* the Describe learning stmt (ps_stmt.described) */
    bool check;                  /* the Describe checking the reading of stmt a Parse
                                  * sent right before it got (check_describe); messages
                                  * using stmt wait for it (check_hold) */
    struct ps_stmt *ref;         /* ... whose shape the client has (its statement, if
                                  * not stmt); a shape_err Describe: whose
                                  * ParameterDescription goes first */
    bool shape_bind;             /* a Bind of stmt whose reading here is not the client's
                                  * (shape_fail): its BindComplete dropped */
    bool check_held;             /* a check a Bind or Describe waits for (named_send):
                                  * its reading is fresh (ps_server_stmt) */
    bool unread;                 /* ... the first reading of cname, an unread name
                                  * (unread_use): its answer makes it the name's */
    bool shape_err;              /* the message failing in its place (a Bind or Describe
                                  * of PGW_0): its 26000 becomes 0A000 */
    bool bind_refused;           /* a Parse injected for a Bind in a failed transaction,
                                  * whose 25P02 becomes the Bind's 08P01 (bind_error) */
    uint16_t bind_formats, bind_params;   /* that Bind's counts */
    uint32_t copy_ends;          /* ps_queue's count when it was sent */
    uint32_t copies;             /* a Query/Execute at the head: its COPY FROM STDINs begun */
    bool drops;                  /* a Query or Execute of DEALLOCATE ALL / DISCARD ALL
                                  * (drops_all_sent): every name goes when it runs */
    struct ps_stmt *prev;        /* a client's Parse taking a name such a drop in its
                                  * batch frees: what the name was, back if the drop
                                  * did not run (undo_parse; on_discard clears it) */
    bool maybe;                  /* a Sync a failed COPY may have read (maybe_resolve) */
    bool probe;                  /* the Close or Bind of pgwharf's probe (probe_send) */
    uint32_t unnamed_gen;        /* a client's unnamed Parse: the generation of its copy
                                  * (ps_unnamed), the client's statement once this
                                  * ParseComplete comes (unnamed_save) */
    bool unnamed_inject;         /* that copy sent by unnamed_ensure: the server's
                                  * unnamed statement at its ParseComplete */
    uint16_t dealloc_cc;         /* a Query of several statements whose one with this
                                  * CommandComplete (1 the first) is SQL DEALLOCATE of the
                                  * client's name cname (stmt), sent as one of
                                  * dealloc_stmt (dealloc = true too): the name is gone,
                                  * and back unless that CommandComplete comes
                                  * (query_dealloc) */
    bool pos;                    /* that Query: its errors' Position moves (ps_queue.pos,
                                  * kept there, not here: few entries need it) */
};

struct ps_queue {
    struct qent *e;
    uint32_t head, len, cap;     /* ring */
    uint32_t syncs;              /* entries of type Sync */
    uint32_t batch_execs;        /* Executes pushed since the last Sync/Query/FunctionCall */
    uint32_t pending_execs;      /* Executes, Queries and FunctionCalls of the requests
                                  * queued (the execs of their Sync/Query entries) */
    /* COPY FROM STDIN: the CopyDones and CopyFails the client has sent
     * (the count stamped on each entry).  A COPY reads what was sent after
     * the message that started it -- the Query or Execute, or for a
     * Query's later COPY the CopyDone that ended the one before -- up to
     * its own CopyDone/CopyFail: the entries stamped win_ends
     * (copy_drop_syncs).  While copy_run, the server's CopyInResponse came
     * and its COPY has not ended.  A Sync in its window is read and
     * ignored only if the COPY reads that far: one that fails first (a
     * BEFORE STATEMENT trigger fails it before it reads anything) leaves
     * it to be answered, so it stays due until the COPY's end tells. */
    uint32_t copy_ends;
    uint32_t win_ends;
    bool copy_run;
    bool copy_in;                /* that COPY is a COPY FROM STDIN (not COPY BOTH) */
    int syncs_read;              /* Syncs a COPY read, not yet told (pgw_ps_copy_syncs_read) */
    /* The type of the message a COPY FROM STDIN just begun reads first,
     * when it is none of its own (copy_refused), else 0. */
    char copy_bad;
    bool drop_armed;             /* a DEALLOCATE ALL / DISCARD ALL Parsed or Bound: the
                                  * next Execute of the batch runs it (drops) */
    uint32_t drops;              /* entries queued with drops */
    /* A COPY FROM STDIN that failed (its ErrorResponse) read the Syncs sent
     * among its data before the failure and ignored them, and the rest
     * were answered: which, only the server knew (the row that failed).
     * They are `maybe` entries until what the server sends next tells
     * (maybe_resolve); `credit` counts those a ReadyForQuery was taken
     * for while it may have answered a later lone Sync. */
    uint32_t maybe, credit;
    /* After an extended COPY that failed leaving maybe Syncs (maybe_ext),
     * the ReadyForQuerys since its error (copy_zs).  While there is none,
     * the server may be skipping to a Sync (the COPY read them all) or
     * have their ReadyForQuerys on the way: what the client sent after its
     * CopyDone or CopyFail, before its next Sync (gap), runs in the second
     * case only, and so waits (gap_hold) for a probe of pgwharf's to tell
     * (probe_send): a Sync, a Close of a name no statement has, a Flush
     * -- one ReadyForQuery dropped for it (probe_z), its CloseComplete
     * showing the ReadyForQuerys before it are all in.  If the server was
     * skipping, an error of pgwharf's makes it skip again (PROBE_SKIP). */
    bool maybe_ext, gap, probe_z, probe_ended;
    bool gap_flushed;            /* a Flush sent ahead of the message gap_hold holds */
    uint32_t copy_zs;
    uint8_t probe;
    uint32_t qdeallocs;          /* entries with dealloc_cc (name_unsettled) */
    uint32_t checks;             /* entries with check */
    bool check_flushed;          /* a Flush follows the last check sent */
    bool backlog_flushed;        /* a Flush follows the last request sent (backlog_hold) */
    /* query_dealloc's, for the Query's entry (pgw_ps_frontend pushes it). */
    char *qd_cname;
    struct ps_stmt *qd_stmt;
    uint16_t qd_cc;
    uint32_t qd_pos_after;
    int32_t qd_pos_delta;
    /* The entries with pos, in the queue's order (a ring: the first of them
     * has the head's): a Position (P) of an error to that Query at or past
     * after (1 the first character) is past the rewritten statement, and
     * is delta characters further on than in the client's text
     * (dealloc_position). */
    struct qd_pos {
        uint32_t after;
        int32_t delta;
    } *pos;
    uint32_t pos_head, pos_len, pos_cap;
};

static struct ps_registry *reg_of(const struct pgw_session *s)
{
    return s->px->ps;
}

static void stmt_unref(struct ps_registry *reg, struct ps_stmt *st)
{
    if (!st || --st->refs > 0)
        return;
    pgw_hmap_remove(&reg->map, &st->hnode);
    reg->st.statements--;
    free(st->parse);
    free(st->pdesc);
    free(st->pinned);
    free(st);
}

/* What PostgreSQL's reading of a statement's text depends on besides the
 * text: the database, and the settings of the session that Parses it.  TimeZone, DateStyle,
 * IntervalStyle, standard_conforming_strings and client_encoding decide
 * what a constant in the text means, a track_extra_parameters value such
 * as search_path which table a name is; PostgreSQL keeps what it read at
 * the Parse.  Clients that differ in them share no statement: one prepared
 * for another client would give them its time zone's timestamps.
 * (application_name and extra_float_digits change no reading.) */
static uint64_t parse_context(const struct pgw_session *s)
{
    uint64_t h = 0x243f6a8885a308d3ULL ^ pgw_proxy_hash_seed(s->px);
    /* The database and the user the servers log in as, too: their schemas
     * (and search_path's "$user") read the text; what pgwharf learns of a
     * statement (its ParameterDescription, whether it returns rows) is
     * then that database's, never another's. */
    if (s->pool) {
        const char *db = pgw_pool_dbname(s->pool), *su = pgw_pool_server_user(s->pool);
        h = pgw_hash_bytes(db, strlen(db) + 1, h);
        h = pgw_hash_bytes(su, strlen(su) + 1, h);
    }
    for (int i = 0; i < s->px->ntracked; i++) {
        if (i == PGW_TP_APPLICATION_NAME || i == PGW_TP_EXTRA_FLOAT_DIGITS)
            continue;
        const char *v = s->params[i];
        h = pgw_hash_bytes(v ? v : "\001", v ? strlen(v) + 1 : 1, h);
    }
    return h;
}

/* The context a Parse is read in now: parse_context, unless a SET the
 * client sent is still unanswered (settings_pending): the server reads
 * the Parse with a value the client's record does not have yet, and the
 * statement is the client's alone, and that SET's alone (settings_gen):
 * a statement read after another SET, in this batch or an earlier one
 * from the same record, is a reading of other settings. */
static uint64_t parse_context_now(const struct pgw_session *s)
{
    uint64_t ctx = parse_context(s);
    if (s->settings_pending) {
        ctx = pgw_hash_bytes(&s->id, sizeof(s->id), ctx ^ 0x5ca1ab1eULL);
        ctx = pgw_hash_bytes(&s->settings_gen, sizeof(s->settings_gen), ctx);
    }
    return ctx;
}

static uint64_t stmt_hash(const uint8_t *key, uint32_t key_len, uint64_t ctx)
{
    return pgw_hash_bytes(key, key_len, 0x5eed ^ ctx);
}

/* The statement a Parse body (name already skipped) read in context ctx
 * gets, if one is registered and not retired (a reference taken); NULL
 * if none is. */
static struct ps_stmt *stmt_find(struct ps_registry *reg, const uint8_t *key, uint32_t key_len,
                                 uint64_t ctx)
{
    uint64_t h = stmt_hash(key, key_len, ctx);
    for (struct pgw_hnode *n = pgw_hmap_first(&reg->map, h); n; n = pgw_hmap_next(n)) {
        struct ps_stmt *st = pgw_container_of(n, struct ps_stmt, hnode);
        if (st->ctx == ctx && !st->retired && st->key_len == key_len &&
            memcmp(st->parse + st->key_off, key, key_len) == 0) {
            st->refs++;
            return st;
        }
    }
    return NULL;
}

/* Find or make the statement for a Parse body (name already skipped) read
 * in context ctx (parse_context). */
static struct ps_stmt *stmt_get(struct ps_registry *reg, const uint8_t *key, uint32_t key_len,
                                uint64_t ctx)
{
    struct ps_stmt *st = stmt_find(reg, key, key_len, ctx);
    if (st)
        return st;
    uint64_t h = stmt_hash(key, key_len, ctx);
    st = calloc(1, sizeof(*st));
    if (!st)
        return NULL;
    st->id = ++reg->next_id;
    st->ctx = ctx;
    snprintf(st->name, sizeof(st->name), "PGW_%llu", (unsigned long long)st->id);
    size_t nl = strlen(st->name) + 1;
    st->parse_len = (uint32_t)(5 + nl + key_len);
    st->parse = malloc(st->parse_len);
    if (!st->parse || pgw_hmap_insert(&reg->map, &st->hnode, h) < 0) {
        free(st->parse);
        free(st);
        return NULL;
    }
    st->parse[0] = PGW_FE_PARSE;
    pgw_put_u32(st->parse + 1, st->parse_len - 1);
    memcpy(st->parse + 5, st->name, nl);
    memcpy(st->parse + 5 + nl, key, key_len);
    st->key_off = (uint32_t)(5 + nl);
    st->key_len = key_len;
    st->refs = 1;
    reg->st.statements++;
    return st;
}

/* The Parse servers get (see pinned). */
static const uint8_t *send_parse(const struct ps_stmt *st)
{
    return st->pinned ? st->pinned : st->parse;
}

static uint32_t send_parse_len(const struct ps_stmt *st)
{
    return st->pinned ? st->pinned_len : st->parse_len;
}

/* st's ParameterDescription is learnt: when its types are not the Parse's
 * own (left to the server, 0, or fewer given), pin them (st->pinned).
 * Without memory the statement goes on unpinned, as before. */
static void pin_types(struct ps_stmt *st)
{
    const uint8_t *text = st->parse + st->key_off;
    const uint8_t *types = text + strlen((const char *)text) + 1;
    uint32_t have = (uint32_t)(st->parse + st->parse_len - types);
    uint32_t want = st->pdesc_len - PGW_MSG_HDR;     /* int16 count, int32 OIDs */
    if (have < 2 || want < 2 || want != 2 + 4u * pgw_get_u16(st->pdesc + PGW_MSG_HDR) ||
        (have == want && memcmp(types, st->pdesc + PGW_MSG_HDR, want) == 0))
        return;
    uint32_t head = (uint32_t)(types - st->parse);
    uint32_t len = head + want;
    uint8_t *m = malloc(len);
    if (!m)
        return;
    memcpy(m, st->parse, head);
    memcpy(m + head, st->pdesc + PGW_MSG_HDR, want);
    pgw_put_u32(m + 1, len - 1);
    st->pinned = m;
    st->pinned_len = len;
}

int pgw_ps_init(struct pgw_proxy *px)
{
    struct ps_registry *reg = calloc(1, sizeof(*reg));
    if (!reg)
        return PGW_ENOMEM;
    pgw_hmap_init(&reg->map);
    px->ps = reg;
    pgw_pool_set_free_hook(px->pools, pgw_ps_server_free, reg);
    return 0;
}

void pgw_ps_deinit(struct pgw_proxy *px)
{
    struct ps_registry *reg = px->ps;
    if (!reg)
        return;
    /* Servers and sessions are gone by now; anything left is unreferenced. */
    HMAP_WALK(w, &reg->map) {
        struct ps_stmt *st = pgw_container_of(w.node, struct ps_stmt, hnode);
        free(st->parse);
        free(st->pdesc);
        free(st->pinned);
        free(st);
    }
    pgw_hmap_deinit(&reg->map);
    free(reg);
    px->ps = NULL;
}

void pgw_ps_get_stats(const struct pgw_proxy *px, struct pgw_ps_stats *st)
{
    if (px->ps)
        *st = ((const struct ps_registry *)px->ps)->st;
    else
        memset(st, 0, sizeof(*st));
}

int pgw_ps_client_count(const struct pgw_session *s)
{
    return s->ps_client ? (int)s->ps_client->map.count : 0;
}

int pgw_ps_server_count(const struct pgw_server *srv)
{
    const struct ps_server *ss = srv->user_state;
    return ss ? ss->count : 0;
}

bool pgw_ps_next(const struct pgw_proxy *px, size_t *bucket, void **cursor,
                 struct pgw_ps_info *info)
{
    const struct ps_registry *reg = px->ps;
    if (!reg)
        return false;
    struct pgw_hnode *n = pgw_hmap_iter(&reg->map, bucket, *cursor);
    *cursor = n;
    if (!n)
        return false;
    const struct ps_stmt *st = pgw_container_of(n, struct ps_stmt, hnode);
    info->name = st->name;
    info->query = (const char *)st->parse + st->key_off;
    const uint8_t *after = st->parse + st->key_off + strlen(info->query) + 1;
    info->nparams = after + 2 <= st->parse + st->parse_len ? pgw_get_u16(after) : 0;
    info->refs = st->refs;
    return true;
}

bool pgw_ps_enabled(const struct pgw_session *s)
{
    if (s->mode == PGW_POOL_SESSION || !s->px->ps)
        return false;
    /* A client's statements live on the servers under pgwharf's names: a
     * reload to 0 leaves it rewriting until it has none left. */
    return s->px->cfg->max_prepared_statements > 0 ||
           (s->ps_client && s->ps_client->map.count > 0);
}

/* ---- client names ---- */

typedef char ps_key[PGW_NOTIFY_STMT_NAME_MAX + 1];

/* The key PostgreSQL files a client's statement name under: converted to
 * the database's encoding, then its first 63 bytes (names equal there are
 * one statement).  One pgwharf cannot convert (iconv's tables are not all
 * PostgreSQL's; MULE_INTERNAL) is keyed by its own first 63 bytes; one
 * PostgreSQL refuses goes to the server as it is (on_parse, on_named):
 * NULL. */
static const char *name_key(const struct pgw_session *s, const char *name, ps_key key)
{
    int rc = pgw_notify_stmt_key_of(s, name, strlen(name), true, key);
    if (rc < 0)
        return NULL;
    if (rc == 0)
        snprintf(key, sizeof(ps_key), "%s", name);
    return key;
}

/* A "key\0name" pair (ps_client_name.name, qent.cname): the name. */
static const char *names_shown(const char *names)
{
    return names + strlen(names) + 1;
}

/* A malloc'd "key\0name" pair. */
static char *names_dup(const char *key, const char *name)
{
    size_t kl = strlen(key) + 1, nl = strlen(name) + 1;
    char *p = malloc(kl + nl);
    if (p) {
        memcpy(p, key, kl);
        memcpy(p + kl, name, nl);
    }
    return p;
}

static uint64_t name_hash(const char *name)
{
    return pgw_hash_bytes(name, strlen(name), 0xc11e);
}

/* name: a key (name_key). */
static struct ps_client_name *client_find(struct pgw_session *s, const char *name)
{
    struct ps_client *c = s->ps_client;
    if (!c)
        return NULL;
    for (struct pgw_hnode *n = pgw_hmap_first(&c->map, name_hash(name)); n; n = pgw_hmap_next(n)) {
        struct ps_client_name *e = pgw_container_of(n, struct ps_client_name, hnode);
        if (strcmp(e->name, name) == 0)
            return e;
    }
    return NULL;
}

/* name: a key (name_key); shown: the client's name for it. */
static bool client_add(struct pgw_session *s, const char *name, const char *shown,
                       struct ps_stmt *st)
{
    if (!s->ps_client) {
        s->ps_client = calloc(1, sizeof(struct ps_client));
        if (!s->ps_client)
            return false;
        pgw_hmap_init(&s->ps_client->map);
    }
    size_t l = strlen(name) + 1, sl = strlen(shown) + 1;
    struct ps_client_name *e = malloc(sizeof(*e) + l + sl);
    if (!e)
        return false;
    memcpy(e->name, name, l);
    memcpy(e->name + l, shown, sl);
    e->stmt = st;
    e->unread = false;
    if (pgw_hmap_insert(&s->ps_client->map, &e->hnode, name_hash(name)) < 0) {
        free(e);
        return false;
    }
    return true;
}

bool pgw_ps_client_has(struct pgw_session *s, const char *name)
{
    ps_key nkey;
    const char *key = *name ? name_key(s, name, nkey) : NULL;
    return key && client_find(s, key) != NULL;
}

bool pgw_ps_adopt(struct pgw_session *s, const char *key, const char *sql)
{
    if (client_find(s, key))
        return true;
    size_t n = strlen(sql);
    uint8_t *k = malloc(n + 3);          /* the text, its NUL, no parameter types */
    if (!k)
        return false;
    memcpy(k, sql, n + 1);
    k[n + 1] = k[n + 2] = 0;
    struct ps_stmt *st = stmt_get(reg_of(s), k, (uint32_t)(n + 3), parse_context_now(s));
    free(k);
    if (!st)
        return false;
    if (!client_add(s, key, key, st)) {
        stmt_unref(reg_of(s), st);
        return false;
    }
    return true;
}

static void client_remove(struct pgw_session *s, struct ps_client_name *e)
{
    pgw_hmap_remove(&s->ps_client->map, &e->hnode);
    stmt_unref(reg_of(s), e->stmt);
    free(e);
}

static void client_clear(struct pgw_session *s)
{
    struct ps_client *c = s->ps_client;
    if (!c)
        return;
    HMAP_WALK(w, &c->map) {
        struct ps_client_name *e = pgw_container_of(w.node, struct ps_client_name, hnode);
        stmt_unref(reg_of(s), e->stmt);
        free(e);
    }
    pgw_hmap_deinit(&c->map);
    pgw_hmap_init(&c->map);
}

/* ---- server statements ---- */

static struct ps_server *server_state(struct pgw_session *s)
{
    struct pgw_server *srv = s->server;
    if (!srv->user_state) {
        struct ps_server *ss = calloc(1, sizeof(*ss));
        if (!ss)
            return NULL;
        pgw_hmap_init(&ss->map);
        pgw_list_init(&ss->lru);
        ss->reg = reg_of(s);
        srv->user_state = ss;
    }
    return srv->user_state;
}

static struct ps_server_stmt *server_find(struct ps_server *ss, const struct ps_stmt *st)
{
    for (struct pgw_hnode *n = pgw_hmap_first(&ss->map, st->id); n; n = pgw_hmap_next(n)) {
        struct ps_server_stmt *e = pgw_container_of(n, struct ps_server_stmt, hnode);
        if (e->stmt == st)
            return e;
    }
    return NULL;
}

/* A use of e served without preparing it: most recently used, a hit. */
static void server_hit(struct ps_server *ss, struct ps_server_stmt *e)
{
    pgw_list_del(&e->lru);
    pgw_list_prepend(&ss->lru, &e->lru);
    ss->reg->st.hits++;
}

static void server_drop(struct ps_server *ss, struct ps_server_stmt *e)
{
    pgw_hmap_remove(&ss->map, &e->hnode);
    pgw_list_del(&e->lru);
    ss->count--;
    stmt_unref(ss->reg, e->stmt);
    free(e);
}

static void server_clear(struct ps_server *ss)
{
    while (!pgw_list_empty(&ss->lru))
        server_drop(ss, pgw_container_of(pgw_list_first(&ss->lru), struct ps_server_stmt, lru));
}

void pgw_ps_server_free(struct pgw_server *srv, void *arg)
{
    struct ps_server *ss = srv->user_state;
    if (!ss)
        return;
    server_clear(ss);
    pgw_hmap_deinit(&ss->map);
    free(ss->reclose);
    free(ss);
    srv->user_state = NULL;
}

/* ---- the response queue ---- */

static bool q_push(struct pgw_session *s, uint8_t kind, char type, struct ps_stmt *st)
{
    struct ps_queue *q = s->ps_queue;
    if (!q) {
        q = s->ps_queue = calloc(1, sizeof(*q));
        if (!q)
            return false;
    }
    if (q->len == q->cap) {
        uint32_t cap = q->cap ? q->cap * 2 : 64;
        struct qent *e = malloc(sizeof(*e) * cap);
        if (!e)
            return false;
        for (uint32_t i = 0; i < q->len; i++)
            e[i] = q->e[(q->head + i) % q->cap];
        free(q->e);
        q->e = e;
        q->cap = cap;
        q->head = 0;
    }
    struct qent *x = &q->e[(q->head + q->len) % q->cap];
    x->kind = kind;
    x->type = type;
    x->stmt = st;
    x->close_id = 0;
    x->cname = NULL;
    x->bname[0] = '\0';
    x->named = NULL;
    x->dup = false;
    x->had = x->as_is = x->pinned = x->dealloc = false;
    x->execs = 0;
    x->learn = x->bind_refused = false;
    x->check = x->check_held = x->shape_bind = x->shape_err = false;
    x->unread = false;
    x->ref = NULL;
    x->copy_ends = q->copy_ends;
    x->copies = 0;
    x->drops = false;
    x->prev = NULL;
    x->maybe = x->probe = false;
    x->dealloc_cc = 0;
    x->pos = false;
    x->unnamed_gen = 0;
    x->unnamed_inject = false;
    if (type == PGW_FE_EXECUTE && q->drop_armed) {
        x->drops = true;
        q->drops++;
        q->drop_armed = false;
    } else if (type == PGW_FE_SYNC || type == PGW_FE_QUERY) {
        q->drop_armed = false;
    }
    if (st)
        st->refs++;
    q->len++;
    q->syncs += type == PGW_FE_SYNC;
    if (type == PGW_FE_EXECUTE || type == PGW_FE_QUERY || type == PGW_FE_FUNCTION_CALL)
        q->batch_execs++;
    if (type == PGW_FE_SYNC || type == PGW_FE_QUERY || type == PGW_FE_FUNCTION_CALL) {
        x->execs = q->batch_execs;
        q->pending_execs += x->execs;
        q->batch_execs = 0;
    }
    return true;
}

static struct qent *q_head(const struct pgw_session *s)
{
    const struct ps_queue *q = s->ps_queue;
    return q && q->len ? &q->e[q->head] : NULL;
}

static struct qent *q_tail(const struct pgw_session *s)
{
    const struct ps_queue *q = s->ps_queue;
    return q && q->len ? &q->e[(q->head + q->len - 1) % q->cap] : NULL;
}

/* x, the Query just queued, gets the Position of qd_pos_* (ps_queue.pos);
 * false if out of memory. */
static bool pos_push(struct ps_queue *q, struct qent *x)
{
    if (q->pos_len == q->pos_cap) {
        uint32_t cap = q->pos_cap ? q->pos_cap * 2 : 4;
        struct qd_pos *p = malloc(sizeof(*p) * cap);
        if (!p)
            return false;
        for (uint32_t i = 0; i < q->pos_len; i++)
            p[i] = q->pos[(q->pos_head + i) % q->pos_cap];
        free(q->pos);
        q->pos = p;
        q->pos_cap = cap;
        q->pos_head = 0;
    }
    struct qd_pos *p = &q->pos[(q->pos_head + q->pos_len) % q->pos_cap];
    p->after = q->qd_pos_after;
    p->delta = q->qd_pos_delta;
    q->pos_len++;
    x->pos = true;
    return true;
}

static void q_pop(struct pgw_session *s)
{
    struct ps_queue *q = s->ps_queue;
    struct qent *x = &q->e[q->head];
    if (x->learn)
        x->stmt->describing = false;     /* answered, or skipped: tried again later */
    stmt_unref(reg_of(s), x->stmt);
    stmt_unref(reg_of(s), x->prev);
    stmt_unref(reg_of(s), x->named);
    stmt_unref(reg_of(s), x->ref);
    free(x->cname);
    q->checks -= x->check;
    q->syncs -= x->type == PGW_FE_SYNC;
    q->drops -= x->drops;
    q->maybe -= x->maybe;
    q->qdeallocs -= x->dealloc_cc > 0;
    if (x->pos) {
        q->pos_head = (q->pos_head + 1) % q->pos_cap;
        q->pos_len--;
    }
    q->pending_execs -= x->execs;
    q->head = (q->head + 1) % q->cap;
    q->len--;
}

bool pgw_ps_idle(const struct pgw_session *s)
{
    return !q_head(s);
}

bool pgw_ps_closes_only(const struct pgw_session *s)
{
    const struct ps_queue *q = s->ps_queue;
    if (!q || q->copy_bad)
        return !q_head(s);
    for (uint32_t i = 0; i < q->len; i++) {
        const struct qent *x = &q->e[(q->head + i) % q->cap];
        if (x->kind != Q_FAKE || x->type != PGW_FE_CLOSE)
            return false;
    }
    return true;
}

bool pgw_ps_unsure(const struct pgw_session *s)
{
    const struct ps_queue *q = s->ps_queue;
    return q && (q->maybe > 0 || q->credit > 0 || q->probe != PROBE_NONE);
}

uint32_t pgw_ps_backlog(const struct pgw_session *s)
{
    return s->ps_queue ? s->ps_queue->len : 0;
}

void pgw_ps_link(struct pgw_session *s)
{
    while (q_head(s))
        q_pop(s);
    if (s->ps_queue) {
        s->ps_queue->batch_execs = 0;
        s->ps_queue->credit = 0;
        s->ps_queue->copy_run = false;
        s->ps_queue->maybe_ext = s->ps_queue->gap = s->ps_queue->probe_z = false;
        s->ps_queue->probe_ended = s->ps_queue->gap_flushed = false;
        s->ps_queue->copy_zs = 0;
        s->ps_queue->probe = PROBE_NONE;
        s->ps_queue->copy_bad = 0;
        s->ps_queue->syncs_read = 0;
        s->ps_queue->drop_armed = false;
    }
}

bool pgw_ps_request_sent(struct pgw_session *s, const char *types, int n, unsigned named,
                         struct ps_stmt *st)
{
    for (int i = 0; i < n; i++) {
        if (!q_push(s, Q_PASS, types[i], (named >> i) & 1 ? st : NULL))
            return false;
        if (types[i] == PGW_FE_PARSE) {      /* unnamed (pgw_ps_unnamed_queued) */
            q_tail(s)->unnamed_gen = s->ps_unnamed_pipe_gen;
            s->ps_unnamed_pipe_gen = 0;
        }
    }
    return true;
}

struct ps_stmt *pgw_ps_client_stmt(struct pgw_session *s, const char *name, const char **sql,
                                   const char **server_name)
{
    ps_key key;
    const char *key_name = name_key(s, name, key);
    struct ps_client_name *cn = key_name ? client_find(s, key_name) : NULL;
    if (!cn || cn->unread)
        return NULL;                     /* (an unread name is read first: unread_use) */
    /* The Parse body: pgwharf's name, then the text (NUL-terminated). */
    *sql = (const char *)cn->stmt->parse + cn->stmt->key_off;
    *server_name = cn->stmt->name;
    return cn->stmt;
}

/* The shape of the result e's copy gives; false when unknown. */
static bool server_reading(const struct ps_server_stmt *e, uint64_t *shape)
{
    if (e->read)
        *shape = e->shape;
    else if (e->stmt->shaped)
        *shape = e->stmt->shape;
    else
        return false;
    return true;
}

/* Does e's copy give a result of another shape than the one a client of
 * ref (e's statement, or the one the client Parsed: on_named) has? */
static bool reading_differs(const struct ps_server_stmt *e, const struct ps_stmt *ref)
{
    uint64_t got;
    return ref->shaped && server_reading(e, &got) && got != ref->shape;
}

bool pgw_ps_server_ready(struct pgw_server *srv, const struct ps_stmt *st)
{
    struct ps_server *ss = srv->user_state;
    struct ps_server_stmt *e = ss ? server_find(ss, st) : NULL;
    return e && !e->stale && !reading_differs(e, st);
}

bool pgw_ps_parse_pending(const struct pgw_session *s)
{
    const struct ps_queue *q = s->ps_queue;
    for (uint32_t i = 0; q && i < q->len; i++) {
        const struct qent *x = &q->e[(q->head + i) % q->cap];
        if ((x->type == PGW_FE_PARSE && x->stmt && !x->dealloc) || x->check)
            return true;
    }
    return false;
}

void pgw_ps_server_used(struct pgw_session *s, struct pgw_server *srv, const struct ps_stmt *st)
{
    struct ps_server *ss = srv->user_state;
    struct ps_server_stmt *e = ss ? server_find(ss, st) : NULL;
    if (e)
        server_hit(ss, e);
}

void pgw_ps_request_dropped(struct pgw_session *s)
{
    const struct qent *h;
    while ((h = q_head(s))) {
        char t = h->type;
        q_pop(s);
        if (t == PGW_FE_QUERY || t == PGW_FE_SYNC || t == PGW_FE_FUNCTION_CALL)
            break;
    }
}

void pgw_ps_unlink(struct pgw_session *s)
{
    pgw_ps_link(s);
}

void pgw_ps_session_free(struct pgw_session *s)
{
    pgw_ps_link(s);
    free(s->ps_unnamed);
    s->ps_unnamed = NULL;
    s->ps_unnamed_len = s->ps_unnamed_cap = 0;
    s->ps_unnamed_ok = false;
    if (s->ps_queue) {
        free(s->ps_queue->qd_cname);
        stmt_unref(reg_of(s), s->ps_queue->qd_stmt);
        free(s->ps_queue->e);
        free(s->ps_queue->pos);
        free(s->ps_queue);
        s->ps_queue = NULL;
    }
    if (s->ps_client) {
        client_clear(s);
        pgw_hmap_deinit(&s->ps_client->map);
        free(s->ps_client);
        s->ps_client = NULL;
    }
}

/* ---- answers made by pgwharf ---- */

/* Put a reply of ours where the client reads next, making room if a large
 * result fills the buffer (the caller re-reads s->sbuf). */
static bool emit_bytes(struct pgw_session *s, const uint8_t *m, uint32_t n)
{
    if (!s->sbuf && !(s->sbuf = pgw_iobuf_get(s->px)))
        return false;
    if (!pgw_iobuf_reserve(s->px, &s->sbuf, s->sbuf->len - s->sbuf->sent + n))
        return false;
    return pgw_iobuf_insert(s->sbuf, s->sbuf->parsed, m, n);
}

static bool emit_fake(struct pgw_session *s, char type)
{
    uint8_t m[5] = { (uint8_t)type, 0, 0, 0, 4 };
    return emit_bytes(s, m, sizeof(m));
}

static void copy_refused(struct pgw_session *s, char type);

void pgw_ps_emit(struct pgw_session *s)
{
    struct qent *h;
    /* Never inside a server message still arriving: it goes out once
     * that message is through (relay.c calls again). */
    if (s->sskip)
        return;
    if (s->ps_queue && s->ps_queue->copy_bad) {
        copy_refused(s, s->ps_queue->copy_bad);      /* after the CopyInResponse */
        return;
    }
    while ((h = q_head(s)) && h->kind == Q_FAKE) {
        /* A Describe in a failed transaction: ParameterDescription, NoData
         * (failed_tx_answer). */
        if (h->type == PGW_FE_DESCRIBE ? !emit_bytes(s, h->stmt->pdesc, h->stmt->pdesc_len) ||
                                             !emit_fake(s, 'n')
                                       : !emit_fake(s, h->type == PGW_FE_CLOSE
                                                           ? PGW_BE_CLOSE_COMPLETE
                                                           : PGW_BE_PARSE_COMPLETE)) {
            pgw_session_close(s, "53200", "out of memory for a reply to the client");
            return;
        }
        q_pop(s);
    }
}

/* ---- frontend side ---- */

/* Room for n more bytes in b once what is scanned has been sent? */
static bool room(const struct pgw_iobuf *b, uint32_t n)
{
    return b->cap - (b->len - b->sent) >= n;
}

/* The same, noting what is missing for the caller (PGW_PS_NEED_ROOM). */
static bool need_room(struct pgw_session *s, const struct pgw_iobuf *b, uint32_t n)
{
    if (room(b, n))
        return true;
    s->ps_room_need = n;
    return false;
}

/* Insert n bytes before the message at b->parsed (parsed moves past
 * them).  false, b unchanged, when there is no room: callers make it
 * first (room, need_room). */
static bool insert_here(struct pgw_iobuf *b, const void *p, uint32_t n)
{
    return pgw_iobuf_insert(b, b->parsed, p, n);
}

/* Replace the message at b->parsed (old bytes) with new ones; parsed stays
 * at its start.  false, b unchanged, when the new ones have no room (the
 * check comes first: a cut, then a failed insert, lost the message). */
static bool replace_here(struct pgw_iobuf *b, uint32_t old, const struct pgw_wbuf *m)
{
    if (m->len > old && !room(b, (uint32_t)(m->len - old)))
        return false;
    pgw_iobuf_cut(b, b->parsed, old);
    pgw_iobuf_insert(b, b->parsed, m->data, m->len);
    b->parsed -= (uint32_t)m->len;
    return true;
}

/* Rename the statement in the message at b->parsed, in place: the old_nl
 * bytes at name_off in its body become `name` (new_nl bytes), and its
 * length follows.  No allocation: the Bind of every execution comes here.
 * False when the buffer has no room for a longer name. */
static bool rename_here(struct pgw_iobuf *b, uint32_t name_off, uint32_t old_nl, const char *name,
                        uint32_t new_nl)
{
    if (new_nl > old_nl) {
        if (!pgw_iobuf_insert(b, b->parsed + 5 + name_off + old_nl, name, new_nl - old_nl))
            return false;
    } else if (new_nl < old_nl) {
        pgw_iobuf_cut(b, b->parsed + 5 + name_off + new_nl, old_nl - new_nl);
    }
    uint8_t *m = b->data + b->parsed;
    memcpy(m + 5 + name_off, name, new_nl);
    pgw_put_u32(m + 1, pgw_get_u32(m + 1) - old_nl + new_nl);
    return true;
}

/* Make sure the server has st prepared (injecting Close for an LRU victim
 * and a Parse as needed); `bytes` tells how much that needs.  0: it has,
 * its copy in *has (when not NULL). */
static uint32_t ensure_bytes(struct pgw_session *s, struct ps_stmt *st,
                             struct ps_server_stmt **has)
{
    struct ps_server *ss = server_state(s);
    struct ps_server_stmt *e = ss ? server_find(ss, st) : NULL;
    if (has)
        *has = e;
    if (e && !e->stale)
        return 0;
    /* Parse, a Close or two, and the Closes owed from a failed batch. */
    return send_parse_len(st) + (2 + (ss ? ss->nreclose : 0)) * CLOSE_BYTES;
}

/* Queue a Close of PGW_<id> ahead of the message at b->parsed, its reply
 * swallowed.  Callers reserve the room (ensure_bytes: CLOSE_BYTES each);
 * false, and nothing sent or queued, when there is none. */
static bool inject_close(struct pgw_session *s, struct pgw_iobuf *b, uint64_t id)
{
    uint8_t m[CLOSE_BYTES];
    int n = snprintf((char *)m + PGW_MSG_HDR + 1, sizeof(m) - PGW_MSG_HDR - 1, "PGW_%llu",
                     (unsigned long long)id);
    uint32_t len = PGW_MSG_HDR + 1 + (uint32_t)n + 1;
    m[0] = PGW_FE_CLOSE;
    pgw_put_u32(m + 1, len - 1);
    m[PGW_MSG_HDR] = 'S';
    if (!room(b, len) || !q_push(s, Q_SWALLOW, PGW_FE_CLOSE, NULL))
        return false;
    insert_here(b, m, len);
    q_tail(s)->close_id = id;
    return true;
}

/* A Describe of st's statement on servers, into m; its length. */
static uint32_t describe_msg(const struct ps_stmt *st, uint8_t m[CLOSE_BYTES])
{
    size_t nl = strlen(st->name) + 1;
    uint32_t len = (uint32_t)(PGW_MSG_HDR + 1 + nl);
    m[0] = PGW_FE_DESCRIBE;
    pgw_put_u32(m + 1, len - 1);
    m[PGW_MSG_HDR] = 'S';
    memcpy(m + PGW_MSG_HDR + 1, st->name, nl);
    return len;
}

/* Queue a Describe of st at `at` in b (b->parsed: ahead of the message
 * there; or right after a Parse, sent with it), its replies kept in st and
 * swallowed (ps_stmt.described).  The caller reserves CLOSE_BYTES of
 * room; false, and nothing sent, when there is none or out of memory. */
static bool inject_describe(struct pgw_session *s, struct pgw_iobuf *b, struct ps_stmt *st,
                            uint32_t at, uint32_t *len)
{
    uint8_t m[CLOSE_BYTES];
    *len = describe_msg(st, m);
    if (!room(b, *len) || !q_push(s, Q_SWALLOW, PGW_FE_DESCRIBE, st))
        return false;
    pgw_iobuf_insert(b, at, m, *len);
    q_tail(s)->learn = true;
    st->describing = true;
    return true;
}

/* ---- the shape of a statement's result ----
 *
 * PostgreSQL fixes a prepared statement's result (its columns' names and
 * types) at the Parse: when its tables change so that the text would
 * give another, a Bind or Describe of it gets 0A000 "cached plan must not
 * change result type" (RevalidateCachedQuery), for as long as the
 * statement lives; only a new Parse reads the new result.  A server that
 * prepares a statement of pgwharf's later reads the text as the tables
 * are then: where that gives another result than the one the statement
 * was first described with, its clients -- drivers that keep the first
 * description and read binary results by it (asyncpg) -- would get rows
 * they misread, or silently wrong values.  So a Parse of a statement whose
 * shape is known goes with a Describe of pgwharf's (check_describe); the
 * client's messages using the statement wait for its answer (check_hold),
 * and where the reading differs from the client's, the client gets
 * PostgreSQL's 0A000 in place of its Bind or Describe, nothing of it run
 * (shape_fail).  Only a prepare on a server that lacks the statement
 * costs the round trip; a Bind of a statement the server has compares
 * two numbers. */

/* The shape of a RowDescription (or of NoData) at msg: the number of
 * columns and each one's name, type, length and type modifier -- what
 * PostgreSQL compares (equalTupleDescs; a column's table is not part of
 * it: a table made again alike gives the same result). */
static uint64_t row_shape(char type, const uint8_t *msg, uint32_t total)
{
    if (type != PGW_BE_ROW_DESC || total < PGW_MSG_HDR + 2)
        return 0x6e6f64617461ULL;            /* NoData */
    const uint8_t *p = msg + PGW_MSG_HDR, *end = msg + total;
    uint16_t n = pgw_get_u16(p);
    uint64_t h = pgw_hash_bytes(p, 2, 0x726f7773ULL);
    p += 2;
    for (uint16_t i = 0; i < n; i++) {
        const uint8_t *z = memchr(p, 0, (size_t)(end - p));
        if (!z || end - (z + 1) < 18)
            return h ^ 1;                    /* malformed: never a match */
        h = pgw_hash_bytes(p, (size_t)(z - p) + 1, h);
        h = pgw_hash_bytes(z + 1 + 6, 10, h);  /* past table and column: type, length, modifier */
        p = z + 1 + 18;
    }
    return h;
}

/* Room check_describe takes: a Describe and a Flush. */
#define CHECK_BYTES (CLOSE_BYTES + PGW_MSG_HDR)

/* Queue a Describe of st at `at` in b, right after a Parse of it: its
 * RowDescription (or NoData) tells the shape of the result that reading
 * gives on this server (shape_seen), its replies swallowed.  ref: the
 * statement whose shape the client has, when not st's (on_named).
 * learn: it learns st too (inject_describe).  cname: the client's Parse
 * that gave its name st (on_parse; its "key\0name"): PostgreSQL would read
 * that Parse afresh, so a reading that differs is the name's, under a
 * statement of its own.  flush: a Flush after it, for a message waiting
 * for the answer (check_hold).  The caller reserves CHECK_BYTES of room;
 * false, and nothing sent, when there is none or out of memory. */
static bool check_describe(struct pgw_session *s, struct pgw_iobuf *b, struct ps_stmt *st,
                           struct ps_stmt *ref, uint32_t at, bool learn, const char *cname,
                           bool flush, uint32_t *len)
{
    uint8_t m[CHECK_BYTES];
    *len = describe_msg(st, m);
    if (flush) {
        static const uint8_t f[] = { PGW_FE_FLUSH, 0, 0, 0, 4 };
        memcpy(m + *len, f, sizeof(f));
        *len += (uint32_t)sizeof(f);
    }
    char *names = cname ? names_dup(cname, names_shown(cname)) : NULL;
    if (!room(b, *len) || (cname && !names) || !q_push(s, Q_SWALLOW, PGW_FE_DESCRIBE, st)) {
        free(names);
        return false;
    }
    pgw_iobuf_insert(b, at, m, *len);
    struct qent *x = q_tail(s);
    x->check = true;
    x->check_held = flush;
    x->cname = names;
    if (ref && ref != st) {
        x->ref = ref;
        ref->refs++;
    }
    if (learn) {
        x->learn = true;
        st->describing = true;
    }
    s->ps_queue->checks++;
    s->ps_queue->check_flushed = flush;
    return true;
}

/* A message using st, while a check_describe of it is out: it waits for
 * the answer, which a Flush asks the server for (the server sends its
 * replies at a Sync or a Flush: the client's may come after this message
 * only).  Not one of the client's name `key` that the checked Parse gave
 * st (on_parse): whatever that reading is, it is this name's, as
 * PostgreSQL's reading of the client's Parse would be (shape_seen moves
 * the name to a statement of its own if it is new), so a driver's Parse,
 * Bind, Execute and Sync go on at once.  A check a message waits for
 * (check_held: named_send's, unread_use's) holds that name's messages
 * too: nothing queues behind a request not sent whole.  PGW_PS_FORWARD
 * when none is out. */
static enum pgw_ps_action check_hold(struct pgw_session *s, struct pgw_iobuf *b,
                                     const struct ps_stmt *st, const char *key)
{
    struct ps_queue *q = s->ps_queue;
    if (!q || q->checks == 0)
        return PGW_PS_FORWARD;
    for (uint32_t i = 0; i < q->len; i++) {
        const struct qent *x = &q->e[(q->head + i) % q->cap];
        if (!x->check || x->stmt != st ||
            (key && x->cname && !x->check_held && strcmp(x->cname, key) == 0))
            continue;
        if (!q->check_flushed) {
            static const uint8_t flush[] = { PGW_FE_FLUSH, 0, 0, 0, 4 };
            if (!need_room(s, b, sizeof(flush)))
                return PGW_PS_NEED_ROOM;
            insert_here(b, flush, sizeof(flush));
            q->check_flushed = true;
        }
        return PGW_PS_WAIT;
    }
    return PGW_PS_FORWARD;
}

static const char *skip_blank(const char *p);

/* Does PostgreSQL fix st's result at its Parse (RevalidateCachedQuery's
 * 0A000 when its tables change)?  Only for a statement it analyses into a
 * query whose columns come from its tables: one starting with SELECT,
 * INSERT, UPDATE, DELETE, MERGE, VALUES, TABLE, WITH or a parenthesis.
 * Not a utility statement: a FETCH or EXECUTE gives the rows of whatever
 * its cursor or statement is when it runs, a SHOW or CALL its own, an
 * EXPLAIN one text column, a DECLARE or CREATE TABLE AS none; PostgreSQL
 * runs them whatever their tables became, so pgwharf checks nothing. */
static bool shape_fixed(const struct ps_stmt *st)
{
    static const char *const kw[] = { "SELECT", "INSERT", "UPDATE", "DELETE", "MERGE",
                                      "VALUES", "TABLE", "WITH" };
    const char *p = skip_blank((const char *)st->parse + st->key_off);
    if (*p == '(')
        return true;
    for (size_t i = 0; i < sizeof(kw) / sizeof(kw[0]); i++) {
        size_t n = strlen(kw[i]);
        if (strncasecmp(p, kw[i], n) == 0 && !isalnum((unsigned char)p[n]) && p[n] != '_' &&
            p[n] != '$' && !((unsigned char)p[n] & 0x80))
            return true;
    }
    return false;
}

/* The answer to a Describe of pgwharf's (h: learn, check) of st on the
 * server: the shape of its reading there, `got`.  The first one known is
 * the statement's.  A reading that differs is of tables changed since:
 * st is retired (on_error: new Parses get a statement of their own); the
 * server's copy stays, known for what it gives (reading_differs: the
 * statement's clients get 0A000 there, after it is read again if this
 * check was not one they waited for: fresh); a client's name the Parse just
 * gave st gets a fresh statement, which PostgreSQL's new Parse would
 * be. */
static void shape_seen(struct pgw_session *s, const struct qent *h, uint64_t got)
{
    struct ps_stmt *st = h->stmt;
    if (h->unread) {
        /* The reading of an unread name: its own from now on (below: a
         * fresh statement if it differs), as any name's is -- the
         * statement of the settings it was read with (unread_use).  (Its
         * message waited for this: the name is still the one it read.) */
        struct ps_client_name *un = client_find(s, h->cname);
        if (un) {
            un->unread = false;
            if (un->stmt != st) {
                st->refs++;
                stmt_unref(reg_of(s), un->stmt);
                un->stmt = st;
            }
        }
    }
    if (!shape_fixed(st))
        return;                          /* never shaped: nothing checked */
    if (!st->shaped) {
        st->shaped = true;
        st->shape = got;
    }
    struct ps_server *ss = s->server ? s->server->user_state : NULL;
    struct ps_server_stmt *e = ss ? server_find(ss, st) : NULL;
    if (e) {
        e->read = true;
        /* An unread name's check fails no message: its reading is the
         * name's, as a Parse's is (on_parse), and may be of tables a
         * transaction changes and rolls back -- another name of st
         * reads it again before it fails (named_send). */
        e->fresh = h->check_held && !h->unread;
        e->shape = got;
    }
    if (got == st->shape)
        return;
    st->retired = true;
    struct ps_client_name *cn = h->cname ? client_find(s, h->cname) : NULL;
    if (cn && cn->stmt == st) {
        struct ps_stmt *fresh = stmt_get(reg_of(s), st->parse + st->key_off, st->key_len, st->ctx);
        if (fresh) {                     /* (else the name keeps st, and gets 0A000) */
            cn->stmt = fresh;
            stmt_unref(reg_of(s), st);   /* the name's */
        }
    }
}

/* The message failing in place of a Bind (after it) or a Describe of a
 * statement whose reading on this server is not the client's (shape_fail):
 * a Bind of PGW_0, which no server has (ids start at 1).  Its 26000 is
 * answered as 0A000 (pgw_ps_backend_error). */
static const uint8_t fail_bind[] = { PGW_FE_BIND, 0, 0, 0, 17, 0, 'P', 'G', 'W', '_', '0', 0,
                                     0, 0, 0, 0, 0, 0 };

/* Is now the time to learn st (inject_describe)?  Right after a Parse of
 * it the server sends, always: the Describe is skipped if that Parse
 * fails, and cannot fail if it does not (in a failed transaction only a
 * statement ending it, which returns no rows, is Parsed).  Elsewhere not
 * in a failed transaction, nor when one may come first (a statement
 * returning rows gets 25P02 there). */
static bool learn_now(const struct pgw_session *s, const struct ps_stmt *st, bool after_parse)
{
    return !st->described && !st->describing &&
           (after_parse || (s->track.sync_out == 0 && s->track.tx_status != 'E'));
}

static void reclose_add(struct ps_server *ss, uint64_t id)
{
    uint64_t *grown = pgw_array_grow(ss->reclose, sizeof(*grown), ss->nreclose, &ss->capreclose, 4);
    if (!grown)
        return;              /* then a 42P05 may come: the server ends at release */
    ss->reclose = grown;
    ss->reclose[ss->nreclose++] = id;
}

static void reclose_flush(struct pgw_session *s, struct pgw_iobuf *b, struct ps_server *ss)
{
    uint32_t n = ss->nreclose;
    ss->nreclose = 0;             /* inject_close's entries re-add what is skipped again */
    for (uint32_t i = 0; i < n; i++)
        if (!inject_close(s, b, ss->reclose[i]))
            reclose_add(ss, ss->reclose[i]);     /* next time */
}

/* Add st to the server's LRU, closing at most `closes` of the least
 * recently used to make room (the Closes ensure_bytes reserved room for:
 * after a reload lowers max_prepared_statements the LRU shrinks a little
 * at each prepare, not all at once). */
static bool server_add(struct pgw_session *s, struct pgw_iobuf *b, struct ps_server *ss,
                       struct ps_stmt *st, int closes)
{
    int max = s->px->cfg->max_prepared_statements;
    if (max < 1)
        max = 1;                  /* a client keeping its statements after a reload to 0 */
    while (ss->count >= max && closes-- > 0 && !pgw_list_empty(&ss->lru)) {
        struct ps_server_stmt *victim =
            pgw_container_of(pgw_list_last(&ss->lru), struct ps_server_stmt, lru);
        if (!inject_close(s, b, victim->stmt->id))
            break;                /* it stays on the server and in the LRU */
        reg_of(s)->st.evictions++;
        server_drop(ss, victim);
    }
    struct ps_server_stmt *e = calloc(1, sizeof(*e));
    if (!e || pgw_hmap_insert(&ss->map, &e->hnode, st->id) < 0) {
        free(e);
        return false;
    }
    e->stmt = st;
    st->refs++;
    pgw_list_prepend(&ss->lru, &e->lru);
    ss->count++;
    return true;
}

/* Before a Bind/Describe of st: the server must have it.  Returns false on
 * allocation failure. */
static bool ensure_prepared(struct pgw_session *s, struct pgw_iobuf *b, struct ps_stmt *st,
                            bool swallow_parse)
{
    struct ps_server *ss = server_state(s);
    if (!ss)
        return false;
    struct ps_server_stmt *e = server_find(ss, st);
    if (e && !e->stale) {
        server_hit(ss, e);
        return true;
    }
    reclose_flush(s, b, ss);
    bool stale = e != NULL;
    if (stale) {                 /* stale plan: close it first */
        if (!inject_close(s, b, st->id))
            return false;
        server_drop(ss, e);
    }
    if (!server_add(s, b, ss, st, stale ? 1 : 2))
        return false;
    if (swallow_parse) {
        insert_here(b, send_parse(st), send_parse_len(st));
        if (q_push(s, Q_SWALLOW, PGW_FE_PARSE, st))
            q_tail(s)->pinned = st->pinned != NULL;
    }
    reg_of(s)->st.server_prepares++;
    s->ps_server_parse_count++;
    return true;
}

/* Bytes dup_error adds ahead of a Parse of `total` bytes, at most. */
#define DUP_BYTES(total) ((total) + 700)

static bool dup_error(struct pgw_session *s, struct pgw_iobuf *b, const char *name,
                      uint32_t total)
{
    /* Only for a name of PS_BNAME_MAX bytes or more (dup_error_own does
     * the rest): it replaces the unnamed statement and portal, and in a
     * failed transaction the DO block's Parse is refused (25P02) even for a
     * text that ends it.  Let the server raise it, so the implicit
     * transaction aborts and the rest of the batch is skipped exactly as
     * PostgreSQL would.  PostgreSQL
     * parses and analyses the text before it looks at the name: the
     * client's Parse goes first into the unnamed statement (its
     * ParseComplete dropped), so a text that fails gets its own error
     * (42601, 42P01, 25P02...) in place of 42P05. */
    /* The message and the block are dollar-quoted (pgw_dollar_tag): no
     * escapes, so a name reads as it is under any standard_conforming_strings
     * (a '' literal took a backslash in it for an escape) and client
     * encoding.  The block's tag is one the message's tag does not end. */
    char msg[400], block[560], sql[640];   /* DUP_BYTES: under 700 in all */
    char mtag[PGW_DOLLAR_TAG_MAX], btag[PGW_DOLLAR_TAG_MAX];
    snprintf(msg, sizeof(msg), "prepared statement \"%.300s\" already exists", name);
    pgw_dollar_tag(msg, mtag);
    snprintf(block, sizeof(block), "BEGIN RAISE EXCEPTION USING ERRCODE = '42P05', "
             "MESSAGE = %s%s%s; END", mtag, msg, mtag);
    pgw_dollar_tag(block, btag);
    snprintf(sql, sizeof(sql), "DO %s%s%s", btag, block, btag);
    struct pgw_wbuf m;
    pgw_wbuf_init(&m);
    const uint8_t *body = b->data + b->parsed + PGW_MSG_HDR;
    size_t nl = strlen(name) + 1;       /* on_parse found its NUL */
    size_t at = pgw_wbuf_msg_begin(&m, PGW_FE_PARSE);
    pgw_wbuf_put_str(&m, "");
    pgw_wbuf_append(&m, body + nl, total - PGW_MSG_HDR - nl);
    pgw_wbuf_msg_end(&m, at);
    at = pgw_wbuf_msg_begin(&m, PGW_FE_PARSE);
    pgw_wbuf_put_str(&m, "");
    pgw_wbuf_put_str(&m, sql);
    pgw_wbuf_put_u16(&m, 0);
    pgw_wbuf_msg_end(&m, at);
    at = pgw_wbuf_msg_begin(&m, PGW_FE_BIND);
    pgw_wbuf_put_str(&m, "");
    pgw_wbuf_put_str(&m, "");
    pgw_wbuf_put_u16(&m, 0);
    pgw_wbuf_put_u16(&m, 0);
    pgw_wbuf_put_u16(&m, 0);
    pgw_wbuf_msg_end(&m, at);
    at = pgw_wbuf_msg_begin(&m, PGW_FE_EXECUTE);
    pgw_wbuf_put_str(&m, "");
    pgw_wbuf_put_u32(&m, 0);
    pgw_wbuf_msg_end(&m, at);
    bool ok = !m.failed && room(b, (uint32_t)m.len);
    if (ok) {
        insert_here(b, m.data, (uint32_t)m.len);
        q_push(s, Q_SWALLOW, PGW_FE_PARSE, NULL);
        q_push(s, Q_SWALLOW, PGW_FE_PARSE, NULL);
        q_push(s, Q_SWALLOW, PGW_FE_BIND, NULL);
        q_push(s, Q_PASS, PGW_FE_EXECUTE, NULL);
        q_tail(s)->dup = true;
    }
    pgw_wbuf_deinit(&m);
    return ok;
}

/* Past blanks and comments (-- to the end of the line, and nested block
 * comments), as PostgreSQL's scanner skips them between words. */
static const char *skip_blank(const char *p)
{
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == '\f' || *p == '\v')
            p++;
        if (p[0] == '-' && p[1] == '-') {
            while (*p && *p != '\n' && *p != '\r')
                p++;
        } else if (p[0] == '/' && p[1] == '*') {
            int depth = 1;
            for (p += 2; *p && depth > 0;) {
                if (p[0] == '/' && p[1] == '*') {
                    depth++;
                    p += 2;
                } else if (p[0] == '*' && p[1] == '/') {
                    depth--;
                    p += 2;
                } else {
                    p++;
                }
            }
        } else {
            return p;
        }
    }
}

/* Does PostgreSQL refuse a Parse of this text in a failed transaction?
 * White space and comments before the first word are PostgreSQL's
 * (`--` to the end of the line, nested slash-star comments): ORMs and
 * sqlcommenter put one first, and read as unsure such a text had its
 * Parse answered ParseComplete by pgwharf where the server refuses it. */
static bool sql_refusable(const char *q)
{
    q = skip_blank(q);
    if (*q == '(')
        return true;              /* a query in parentheses ends no transaction */
    char word[16];
    size_t n = 0;
    while (n < sizeof(word) - 1 && ((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z')))
        word[n++] = *q++;
    word[n] = '\0';
    if (n == 0)
        return false;             /* empty, or something else: unsure */
    static const char *const ends[] = { "commit", "end", "rollback", "abort", "prepare" };
    for (size_t i = 0; i < sizeof(ends) / sizeof(ends[0]); i++)
        if (strcasecmp(word, ends[i]) == 0)
            return false;
    return true;
}

static bool text_refusable(const struct ps_stmt *st)
{
    return sql_refusable((const char *)st->parse + st->key_off);
}

/* Will the server refuse a Parse of st sent now, for its transaction?
 * In a failed transaction (the last ReadyForQuery said 'E', and nothing
 * sent since could have ended it: no Query, Sync or Execute; a Bind,
 * Describe or Close cannot) PostgreSQL refuses a Parse with 25P02,
 * but for an empty text or a statement that ends the transaction.  The
 * text is judged conservatively: only a first word that is plainly
 * something else (SELECT, INSERT...) counts. */
static bool tx_failed(const struct pgw_session *s)
{
    return s->track.tx_status == 'E' && s->track.sync_out == 0 && s->track.execs == 0;
}

static bool parse_refused(const struct pgw_session *s, const struct ps_stmt *st)
{
    return tx_failed(s) && text_refusable(st);
}

static bool copy_reads_on(const struct pgw_session *s);

/* Is the transaction a Parse sent now runs in (a failed one or not) still
 * to be decided by requests sent ahead and not answered?  After a
 * ReadyForQuery 'I' only an Execute or a Query among them can open a
 * transaction block (to fail later); in a block any of them may fail it or
 * end it.  An Execute earlier in the Parse's own batch leaves it unknown
 * anyway (parse_refused).  Not while a COPY may read what is sent now
 * (copy_reads_on: waiting for its answers would wait for the COPY's end,
 * behind); a COPY that ended (its CommandComplete or error came, the
 * ReadyForQuery after it not yet: track.copy still) reads nothing more,
 * and what was sent after it is answered as ever (a Bind behind a
 * ReadyForQuery still to come after a COPY, in one write with a query
 * failing the transaction, got 25P02 for 08P01). */
static bool tx_pending(const struct pgw_session *s)
{
    const struct ps_queue *q = s->ps_queue;
    return q && s->track.sync_out > 0 && s->track.execs == 0 && !copy_reads_on(s) &&
           (s->track.tx_status != 'I' || q->pending_execs > 0);
}

/* A Parse of a name the client has in use: PostgreSQL's own 42P05.  The
 * text is Parsed twice under a name of pgwharf's own, the second time
 * refused as a name in use (its error naming the client's statement:
 * pgw_ps_backend_error).  As in PostgreSQL, a text that fails gets its own
 * error first (42601, 42P01, 25P02 in a failed transaction, where a text
 * that ends the transaction, ROLLBACK..., is accepted and gets 42P05); the
 * implicit transaction aborts and the rest of the batch is skipped; and
 * the unnamed statement and portal are left alone (dup_error's DO block
 * replaced both, which in a transaction block the client may use after
 * the Sync).  The statement the first Parse made is closed later
 * (reclose). */
static enum pgw_ps_action dup_error_own(struct pgw_session *s, struct pgw_iobuf *b,
                                           const char *name, uint32_t total)
{
    char own[24];
    uint64_t id = ++reg_of(s)->next_id;
    snprintf(own, sizeof(own), "PGW_%llu", (unsigned long long)id);
    const uint8_t *body = b->data + b->parsed + PGW_MSG_HDR;
    size_t nl = strlen(name) + 1;
    struct pgw_wbuf m;
    pgw_wbuf_init(&m);
    for (int i = 0; i < 2; i++) {
        size_t at = pgw_wbuf_msg_begin(&m, PGW_FE_PARSE);
        pgw_wbuf_put_str(&m, own);
        pgw_wbuf_append(&m, body + nl, total - PGW_MSG_HDR - nl);
        pgw_wbuf_msg_end(&m, at);
    }
    enum pgw_ps_action a = PGW_PS_NEED_ROOM;
    /* server_state: where that statement is closed again; the ones earlier
     * duplicates made are closed first (ahead of this one's error, which
     * skips the rest of the batch): a client repeating a duplicate Parse,
     * its statements all prepared already, would otherwise pile them up
     * on the server past max_prepared_statements. */
    struct ps_server *ss = server_state(s);
    uint32_t closes = ss ? ss->nreclose * CLOSE_BYTES : 0;
    char saved[PS_BNAME_MAX];
    memcpy(saved, name, nl);             /* name is in b, which the Closes move */
    if (!m.failed && room(b, (uint32_t)m.len + closes)) {
        if (ss)
            reclose_flush(s, b, ss);
        if (ss && q_push(s, Q_SWALLOW, PGW_FE_PARSE, NULL) &&
            q_push(s, Q_PASS, PGW_FE_PARSE, NULL)) {
            struct qent *x = q_tail(s);
            x->close_id = id;
            memcpy(x->bname, saved, nl);
            insert_here(b, m.data, (uint32_t)m.len);
            a = PGW_PS_DROPPED;
        } else {
            pgw_session_close(s, "53200", "out of memory");
            a = PGW_PS_FAILED;
        }
    }
    pgw_wbuf_deinit(&m);
    return a;
}

/* Could a message sent now not be answered on its own before a COPY
 * under way ends?  So while the COPY FROM STDIN has not seen its CopyDone
 * or CopyFail (the message is its own, read and refused: copy_refused),
 * or after one that failed with Syncs among its data only a probe tells
 * which were answered (maybe_resolve).  Past a COPY the client ended,
 * what it sent after it runs as any batch does: a name its Parse or
 * Close decides waits (name_unsettled) -- decided at once, a failed Parse
 * of the name (its error still to come) left it taken and the next Parse
 * of it got 42P05, or the name gone where PostgreSQL has it. */
static bool copy_reads_on(const struct pgw_session *s)
{
    const struct ps_queue *q = s->ps_queue;
    return s->track.copy && ((q->copy_run && q->copy_ends == q->win_ends) || q->maybe > 0);
}

/* Is what the client's `name` (statement st, if it has one) means on
 * the server still to be decided by a batch sent ahead, before a Sync
 * whose ReadyForQuery has not come?  There a Parse or Close of that name
 * (the client's), or a Parse or Close of st on the server (the client's
 * or injected), takes effect only if nothing earlier in its batch fails:
 * PostgreSQL skips it otherwise.  A message naming it that is sent now,
 * after that Sync, waits for the answer (PGW_PS_WAIT): rewritten at
 * once, it would run under pgwharf's name where PostgreSQL finds no
 * statement, or be refused where PostgreSQL has one.  Rare (a pipeline
 * through a Sync using a statement just prepared or closed) and cheap
 * otherwise: no Sync queued, nothing to look at. */
static bool name_unsettled(const struct pgw_session *s, const char *key,
                           const struct ps_stmt *st)
{
    const struct ps_queue *q = s->ps_queue;
    /* A DEALLOCATE among a Query's statements (query_dealloc) settles
     * the name at that Query's answer. */
    for (uint32_t i = 0; q && q->qdeallocs > 0 && i < q->len; i++) {
        const struct qent *x = &q->e[(q->head + i) % q->cap];
        if (x->dealloc_cc && x->cname && strcmp(x->cname, key) == 0)
            return true;
    }
    if (!q || q->syncs == 0 || copy_reads_on(s))
        return false;
    bool pending = false;
    for (uint32_t i = 0, left = q->syncs; i < q->len && left > 0; i++) {
        const struct qent *x = &q->e[(q->head + i) % q->cap];
        if (x->type == PGW_FE_SYNC) {
            if (pending)
                return true;
            left--;
            continue;
        }
        if (pending)
            continue;
        if (x->cname && (x->type == PGW_FE_PARSE || x->type == PGW_FE_CLOSE) &&
            strcmp(x->cname, key) == 0)
            pending = true;
        else if (st && ((x->type == PGW_FE_PARSE && x->stmt == st && x->kind != Q_FAKE &&
                         !x->dealloc) ||
                        (x->close_id && x->close_id == st->id)))
            pending = true;
    }
    return false;
}

/* SQL DEALLOCATE [PREPARE] name alone (white space and one ';' around
 * it), its name read as PostgreSQL reads it: drivers that keep a cache of
 * statements (psycopg 3.1, PHP's PDO) drop the oldest so.  The server has
 * no statement of the client's name (pgwharf's are PGW_<n>) and would
 * answer 26000.  DEALLOC_MINE: one of the client's names (*cn; full then
 * holds what the NOTICE 42622 needs); DEALLOC_WAIT: a Parse or Close of
 * that name is still to be settled (undo_parse, undo_close may bring it
 * back); DEALLOC_NONE: anything else, for the server. */
enum { DEALLOC_NONE, DEALLOC_MINE, DEALLOC_WAIT };

/* Could the n bytes of sql start a DEALLOCATE? */
static bool may_be_deallocate(const char *sql, size_t n)
{
    static const char *const kw[] = { "DEALLOCATE" };
    return pgw_sql_may_start(sql, n, kw, 1);
}

static int dealloc_target(struct pgw_session *s, const char *sql, size_t len, char *name,
                          struct pgw_ident_full *full, struct ps_client_name **cn)
{
    ps_key key;
    if (!s->ps_client || len > PGW_NOTIFY_QUERY_MAX || !may_be_deallocate(sql, len) ||
        !pgw_notify_dealloc_key(s, sql, len, key, name, full))
        return DEALLOC_NONE;
    *cn = client_find(s, key);
    if (*cn && !name_unsettled(s, key, (*cn)->stmt))
        return DEALLOC_MINE;
    pgw_ident_full_free(full);
    return *cn || name_unsettled(s, key, NULL) ? DEALLOC_WAIT : DEALLOC_NONE;
}

/* The statement the server deallocates in place of the client's (below):
 * never one of pgwharf's PGW_<n>, nor a name a client foresees.  It was the
 * fixed "PGW_DEALLOC", which a client may PREPARE in SQL (no name is out of
 * SQL's reach: a quoted one takes any byte but NUL, and the server keeps 63
 * of them): the Close of it dropped that statement under the client, and
 * the EXECUTE of it got 26000.  Now 16 random hex digits follow the
 * prefix, drawn once per process: the name is on a server only from the
 * Parse ahead of the DEALLOCATE to the DEALLOCATE itself (left there only
 * when the client's Execute of it never comes). */
#define DEALLOC_PREFIX "PGW_DEALLOC_"

static const char *dealloc_stmt(struct pgw_session *s)
{
    struct pgw_proxy *px = s->px;
    if (!px->ps_dealloc[0]) {
        uint64_t v = 0;
        if (pgw_proxy_random(px, &v, sizeof(v)) < 0 || v == 0)
            v = pgw_proxy_hash_seed(px) * 0x9e3779b97f4a7c15ULL ^ (uint64_t)(uintptr_t)px;
        snprintf(px->ps_dealloc, sizeof(px->ps_dealloc), DEALLOC_PREFIX "%016llx",
                 (unsigned long long)v);
    }
    return px->ps_dealloc;
}

/* A Close of dealloc_stmt (no error if it is not there) and a Parse of it
 * ("SELECT"), into m: what the server deallocates in place of a client's
 * statement. */
static void dealloc_stmt_prepare(struct pgw_session *s, struct pgw_wbuf *m)
{
    const char *name = dealloc_stmt(s);
    size_t at = pgw_wbuf_msg_begin(m, PGW_FE_CLOSE);
    pgw_wbuf_put_u8(m, 'S');
    pgw_wbuf_append(m, name, strlen(name) + 1);
    pgw_wbuf_msg_end(m, at);
    at = pgw_wbuf_msg_begin(m, PGW_FE_PARSE);
    pgw_wbuf_append(m, name, strlen(name) + 1);
    pgw_wbuf_append(m, "SELECT", sizeof("SELECT"));
    pgw_wbuf_put_u16(m, 0);
    pgw_wbuf_msg_end(m, at);
}

/* "DEALLOCATE \"<dealloc_stmt>\"" into m. */
static void dealloc_stmt_text(struct pgw_session *s, struct pgw_wbuf *m)
{
    const char *name = dealloc_stmt(s);
    pgw_wbuf_append(m, "DEALLOCATE \"", sizeof("DEALLOCATE \"") - 1);
    pgw_wbuf_append(m, name, strlen(name));
    pgw_wbuf_put_u8(m, '"');
}

/* Is a DEALLOCATE ALL / DISCARD ALL sent and not yet answered?
 * DROP_EARLIER: in a request before this message's (a Sync or Query
 * after it is sent): its answer comes, and with it whether the client's
 * names are gone.  DROP_THIS_BATCH: earlier in this message's batch,
 * which PostgreSQL runs first or skips, with the rest, on an error. */
enum { DROP_NONE, DROP_THIS_BATCH, DROP_EARLIER };

static int drop_unsettled(const struct pgw_session *s)
{
    const struct ps_queue *q = s->ps_queue;
    if (!q || q->drops == 0 || s->track.copy)
        return DROP_NONE;
    int at = DROP_NONE;
    for (uint32_t i = 0; i < q->len; i++) {
        const struct qent *x = &q->e[(q->head + i) % q->cap];
        if (x->drops && x->type == PGW_FE_QUERY)
            return DROP_EARLIER;
        if (x->drops)
            at = DROP_THIS_BATCH;
        else if (at && (x->type == PGW_FE_SYNC || x->type == PGW_FE_QUERY ||
                        x->type == PGW_FE_FUNCTION_CALL))
            return DROP_EARLIER;
    }
    return at;
}

/* A Parse into the unnamed statement of SQL DEALLOCATE of one of the
 * client's statements (text up to end: the text, its NUL, the parameter
 * types), as psycopg 3.1 sends it (Parse, Bind, Describe, Execute, Sync).
 * The name goes now, as a Close's does (back if the server skips or refuses
 * the Parse: undo_close), and the server deallocates a statement of
 * pgwharf's instead: a Close and a Parse of dealloc_stmt go ahead of the
 * client's Parse (their replies swallowed), which becomes DEALLOCATE of
 * it.  So the client gets PostgreSQL's replies, tag and all, and
 * in a failed transaction the 25P02 (of that Parse). False when it is not
 * such a Parse; else *a says what the relay does. */
static bool dealloc_parse(struct pgw_session *s, struct pgw_iobuf *b, uint32_t *total,
                          const uint8_t *text, const uint8_t *end, enum pgw_ps_action *a)
{
    const uint8_t *te = memchr(text, 0, (size_t)(end - text));
    if (!te || end - te != 3 || pgw_get_u16(te + 1) != 0)
        return false;                    /* parameters: not a plain DEALLOCATE */
    char name[PGW_CHANNEL_UTF8_MAX + 1];
    struct pgw_ident_full full = { .cut = false };
    struct ps_client_name *cn = NULL;
    switch (dealloc_target(s, (const char *)text, (size_t)(te - text), name, &full, &cn)) {
    case DEALLOC_NONE:
        return false;
    case DEALLOC_WAIT:
        *a = PGW_PS_WAIT;
        return true;
    default:
        break;
    }
    pgw_ident_full_free(&full);
    /* Behind a DEALLOCATE ALL or DISCARD ALL not yet answered, as for a
     * Query's (query_dealloc): one sent ahead is waited for, one earlier in
     * this batch leaves the Parse to the server (26000 at its Execute, as
     * in PostgreSQL; rewritten, it was answered DEALLOCATE: review r5). */
    int drop = drop_unsettled(s);
    if (drop == DROP_EARLIER) {
        *a = PGW_PS_WAIT;
        return true;
    }
    if (drop == DROP_THIS_BATCH)
        return false;
    /* Both built first: nothing changes unless all is there. */
    struct pgw_wbuf m, p;
    pgw_wbuf_init(&m);
    pgw_wbuf_init(&p);
    dealloc_stmt_prepare(s, &m);
    size_t at = pgw_wbuf_msg_begin(&p, PGW_FE_PARSE);
    pgw_wbuf_put_u8(&p, 0);
    dealloc_stmt_text(s, &p);
    pgw_wbuf_put_u8(&p, 0);
    pgw_wbuf_put_u16(&p, 0);
    pgw_wbuf_msg_end(&p, at);
    *a = PGW_PS_NEED_ROOM;
    if (!need_room(s, b, (uint32_t)(m.len + p.len))) {   /* inserted before the old one goes */
        pgw_wbuf_deinit(&m);
        pgw_wbuf_deinit(&p);
        return true;
    }
    char *cname = names_dup(cn->name, names_shown(cn->name));
    if (!cname || m.failed || p.failed || !q_push(s, Q_SWALLOW, PGW_FE_CLOSE, NULL) ||
        !q_push(s, Q_SWALLOW, PGW_FE_PARSE, NULL) || !q_push(s, Q_PASS, PGW_FE_PARSE, cn->stmt)) {
        free(cname);
        pgw_wbuf_deinit(&m);
        pgw_wbuf_deinit(&p);
        pgw_session_close(s, "53200", "out of memory");
        *a = PGW_PS_FAILED;
        return true;
    }
    /* (need_room made the room for both: should either fail, the queue
     * has their entries already) */
    if (!insert_here(b, m.data, (uint32_t)m.len) || !replace_here(b, *total, &p)) {
        free(cname);
        pgw_wbuf_deinit(&m);
        pgw_wbuf_deinit(&p);
        pgw_session_close(s, "53200", "no room to rewrite a DEALLOCATE");
        *a = PGW_PS_FAILED;
        return true;
    }
    *total = (uint32_t)p.len;
    q_tail(s)->cname = cname;
    q_tail(s)->dealloc = true;
    client_remove(s, cn);
    pgw_wbuf_deinit(&m);
    pgw_wbuf_deinit(&p);
    *a = PGW_PS_FORWARD;
    return true;
}

/* Is text[0..n) nothing but white space and comments (a statement
 * PostgreSQL's parser drops: no CommandComplete answers it)? */
static bool sql_blank(const char *p, size_t n)
{
    const char *end = p + n;
    while (p < end) {
        size_t k;
        if (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == '\f' || *p == '\v')
            p++;
        else if ((k = pgw_sql_comment_len(p, (size_t)(end - p))) > 0)
            p += k;
        else
            return false;
    }
    return true;
}

static bool drops_all(const char *sql);

/* Can byte c stand in an identifier or keyword (PostgreSQL's scanner:
 * letters, digits, _, $, any byte of a multibyte character)? */
static bool ident_byte(char c)
{
    unsigned char u = (unsigned char)c;
    return u >= 0x80 || u == '_' || u == '$' || (u >= '0' && u <= '9') ||
           ((u | 0x20) >= 'a' && (u | 0x20) <= 'z');
}

/* Does text[0..n) hold `word` (upper case, ASCII) in any case: as a
 * word of its own (token: no identifier byte either side, as a keyword
 * stands), or anywhere, inside a longer name too? */
static bool find_ci(const char *text, size_t n, const char *word, bool token)
{
    size_t wl = strlen(word);
    for (size_t i = 0; i + wl <= n; i++) {
        if (token && ((i > 0 && ident_byte(text[i - 1])) || (i + wl < n && ident_byte(text[i + wl]))))
            continue;
        size_t k = 0;
        while (k < wl && (text[i + k] & ~0x20) == word[k])
            k++;
        if (k == wl)
            return true;
    }
    return false;
}

/* Anywhere: only where a false hit costs nothing but a closer look
 * (pgw_ps_deallocate_query's first glance, whose text may be cut, a
 * Query still arriving). */
static bool has_substr_ci(const char *text, size_t n, const char *word)
{
    return find_ci(text, n, word, false);
}

/* As a word of its own: where a hit changes the answer (query_dealloc
 * leaves the text to the server), a name that holds the letters (a table
 * "rules", a column discarded) is no hit. */
static bool has_token_ci(const char *text, size_t n, const char *word)
{
    return find_ci(text, n, word, true);
}

/* Is the statement text t[0..n) (no NUL) one that drops every prepared
 * statement (drops_all)?  A long one that may be (comments...): taken
 * for one.  ALL a word of its own: DEALLOCATE holds those letters, and
 * every DEALLOCATE of 64 bytes or more among other statements (a long
 * name, white space) was taken for a DEALLOCATE ALL and left to the
 * server, which answered 26000 (review r2 of session 53).  DEALLOCATE
 * and DISCARD words of their own too: a column discarded in a long
 * statement with a UNION ALL did the same (session 54). */
static bool drops_all_text(const char *t, size_t n)
{
    char one[64];
    if (n < sizeof(one)) {
        memcpy(one, t, n);
        one[n] = '\0';
        return drops_all(one);
    }
    return has_token_ci(t, n, "ALL") &&
           (has_token_ci(t, n, "DEALLOCATE") || has_token_ci(t, n, "DISCARD"));
}

/* The characters of n bytes of a client's text, as PostgreSQL counts them
 * for an error's Position: bytes where they are all ASCII, UTF-8
 * characters in that client_encoding; -1 when not known (another
 * encoding). */
static long text_chars(const struct pgw_session *s, const char *t, size_t n)
{
    long chars = 0;
    bool ascii = true;
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)t[i] >= 0x80)
            ascii = false;
        if (((unsigned char)t[i] & 0xC0) != 0x80)
            chars++;
    }
    if (ascii)
        return (long)n;
    const char *enc = s->params[PGW_TP_CLIENT_ENCODING];
    if (!enc && s->pool)
        enc = pgw_params_get(pgw_pool_defaults(s->pool), "client_encoding");
    if (!enc || (strcasecmp(enc, "UTF8") != 0 && strcasecmp(enc, "UTF-8") != 0 &&
                 strcasecmp(enc, "UNICODE") != 0))
        return -1;
    return chars;
}

/* A simple Query of several statements, one of them SQL DEALLOCATE
 * [PREPARE] of one of the client's statements: psqlODBC sends
 * "SAVEPOINT _per_query_svp_;DEALLOCATE \"_PLAN0x...\";RELEASE
 * _per_query_svp_" whenever it drops a statement with autocommit off.  The
 * server has no statement of the client's name and would answer 26000 (the
 * rest of the Query skipped, the transaction failed), and the name would
 * stay the client's.  As for a Parse of it (dealloc_parse), the server
 * deallocates one of pgwharf's instead: a Close and a Parse of
 * dealloc_stmt and a Sync go ahead of the Query (their replies swallowed:
 * only with nothing outstanding, and not in a failed transaction, where
 * the Parse would fail; in_batch, behind an extended batch with no Sync,
 * the Close and the Parse join the batch, no Sync, their replies dropped
 * in turn, skipped with the Query after an error in the batch, as
 * PostgreSQL skips it), and that statement's text becomes DEALLOCATE of
 * dealloc_stmt: the client gets PostgreSQL's replies, tag and all.  The
 * name goes now (a Parse of it behind the Query waits for its answer:
 * name_unsettled) and comes back unless that statement's CommandComplete
 * comes (query_dealloc_reply): one before it may fail.  Statements are
 * counted as PostgreSQL's parser sees them, split at each ';' outside
 * literals, quoted names, dollar quotes and comments
 * (pgw_sql_statement_end), empty ones dropped; a text where a ';' may
 * stand inside a statement (CREATE RULE, BEGIN ATOMIC), or where a
 * backslash may escape a quote (standard_conforming_strings off or named,
 * any backslash at all: an E'' literal continues across a newline into
 * the next quoted part) is left to the server, as are a DEALLOCATE ALL
 * or DISCARD ALL before it (which drops dealloc_stmt too), a second such
 * DEALLOCATE in the same Query, one in a failed transaction, and a name
 * over 63 bytes (whose NOTICE 42622 the server would no longer send).
 * PGW_PS_DEALLOC_REWRITTEN when the Query at the buffer's parse position
 * was rewritten, 0 to send it as it is, PGW_NOTIFY_MORE to wait until
 * nothing is outstanding (or a Parse or Close of the name is answered),
 * -1 when the session was closed. */
static int query_dealloc(struct pgw_session *s, const char *sql, size_t len, bool quiet,
                         bool in_batch)
{
    if (!s->server || has_token_ci(sql, len, "RULE") || has_token_ci(sql, len, "ATOMIC") ||
        has_token_ci(sql, len, "STANDARD_CONFORMING_STRINGS") || memchr(sql, '\\', len))
        return 0;
    /* With standard_conforming_strings off a backslash escapes a quote in
     * any literal: the split would not be PostgreSQL's. */
    const char *scs = s->params[PGW_TP_STANDARD_CONFORMING_STRINGS];
    if (!scs && s->pool)
        scs = pgw_params_get(pgw_pool_defaults(s->pool), "standard_conforming_strings");
    if (!scs || strcasecmp(scs, "on") != 0)
        return 0;
    char name[PGW_CHANNEL_UTF8_MAX + 1];
    struct pgw_ident_full full = { .cut = false };
    struct ps_client_name *cn = NULL;
    size_t at = 0, plen = 0;
    uint32_t cc = 0;
    uint32_t found = 0;
    bool cut = false;
    for (size_t off = 0, k = 0; off < len;) {
        size_t e = pgw_sql_statement_end(sql + off, len - off);
        const char *one = sql + off;
        off += e + 1;
        if (sql_blank(one, e))
            continue;
        k++;
        if (!found && drops_all_text(one, e))
            return 0;                    /* it would drop dealloc_stmt too: the server's */
        struct ps_client_name *c = NULL;
        switch (dealloc_target(s, one, e, name, &full, &c)) {
        case DEALLOC_WAIT:
            /* In a batch too: what it waits for (a Parse or Close of the
             * name before a Sync, a Query's DEALLOCATE of it) went ahead
             * of the batch and is answered whatever comes of it.  Sent as
             * it was, a name Parsed there got 26000 and stayed (review r2
             * of 0ec8acd).  Not while the count of answers may be high. */
            return in_batch && s->track.count_high ? 0 : PGW_NOTIFY_MORE;
        case DEALLOC_MINE:
            if (++found > 1) {
                pgw_ident_full_free(&full);
                return 0;                /* a second one: all left to the server */
            }
            cut = full.cut;
            pgw_ident_full_free(&full);
            cn = c;
            at = (size_t)(one - sql);
            plen = e;
            cc = (uint32_t)k;
            break;
        default:
            break;
        }
    }
    char status = s->track.tx_status ? s->track.tx_status : 'I';
    if (!found || cut || cc > UINT16_MAX)
        return 0;
    /* A failed transaction as last answered: in a batch behind requests not
     * answered yet (a ROLLBACK) it may not be the one the batch runs in --
     * it waits for them, as for a drop below (else sent as it is, 26000
     * where PostgreSQL, past the ROLLBACK, deallocates: review r5). */
    if (status == 'E')
        return in_batch && s->track.sync_out > 0 && !s->track.count_high ? PGW_NOTIFY_MORE
                                                                          : 0;
    /* In a batch, behind a DEALLOCATE ALL or DISCARD ALL not yet answered:
     * one ahead of the batch says whether the name is still there (it
     * waits for that answer); one in the batch runs first in PostgreSQL,
     * and its DEALLOCATE gets 26000 -- sent as it is, the server's (or
     * skipped with it after an error).  Rewritten, it was answered
     * DEALLOCATE where PostgreSQL has no such statement any more (review
     * r5 of 0ec8acd). */
    int drop = in_batch ? drop_unsettled(s) : DROP_NONE;
    if (drop == DROP_EARLIER)
        return s->track.count_high ? 0 : PGW_NOTIFY_MORE;
    if (drop == DROP_THIS_BATCH)
        return 0;
    if (!quiet && !in_batch)
        return PGW_NOTIFY_MORE;
    /* Where an error's Position past the statement moves to (read before
     * the buffer holding sql is edited). */
    uint32_t pos_after = 0;
    int32_t pos_delta = 0;
    long before = text_chars(s, sql, at), was = text_chars(s, sql + at, plen);
    if (before >= 0 && was >= 0) {
        long now = (long)strlen("DEALLOCATE \"\"") + (long)strlen(dealloc_stmt(s));
        pos_after = (uint32_t)(before + now + 1);
        pos_delta = (int32_t)(now - was);
    }
    struct pgw_wbuf m, q;
    pgw_wbuf_init(&m);
    pgw_wbuf_init(&q);
    dealloc_stmt_prepare(s, &m);
    size_t mk;
    if (!in_batch) {
        mk = pgw_wbuf_msg_begin(&m, PGW_FE_SYNC);
        pgw_wbuf_msg_end(&m, mk);
    }
    mk = pgw_wbuf_msg_begin(&q, PGW_FE_QUERY);
    pgw_wbuf_append(&q, sql, at);
    dealloc_stmt_text(s, &q);
    pgw_wbuf_append(&q, sql + at + plen, len - at - plen);
    pgw_wbuf_put_u8(&q, 0);
    pgw_wbuf_msg_end(&q, mk);
    char *cname = names_dup(cn->name, names_shown(cn->name));
    struct pgw_iobuf *b = s->cbuf;
    /* Room for what goes ahead and for what the text grows by (the new
     * Query replaces the old in place, not beside it): some tens of bytes.
     * The Query is small (PGW_NOTIFY_QUERY_MAX), but the buffer may be
     * full of what the client pipelined behind it, up to the largest
     * buffer: the room is made past PGW_IOBUF_MAX, up to
     * PGW_IOBUF_EDIT_MAX (the limit closed with 54000 a client that sent
     * nothing too large, its buffer near PGW_IOBUF_MAX).  Past that, held
     * only by a client that refilled a buffer an earlier rewrite grew, it
     * is 54000, as for a message too large (relay.c's read_on), not 53200,
     * which is pgwharf short of memory (the reservation failing within
     * the limit). */
    uint32_t old = (uint32_t)(len + 1 + PGW_MSG_HDR);
    uint32_t add = (uint32_t)m.len + (q.len > old ? (uint32_t)q.len - old : 0);
    uint64_t need = (uint64_t)(b->len - b->sent) + add;
    bool ok = cname && !m.failed && !q.failed, too_large = false;
    if (ok && !room(b, add)) {
        if ((too_large = need > PGW_IOBUF_EDIT_MAX))
            ok = false;
        else if ((ok = pgw_iobuf_reserve_edit(s->px, &s->cbuf, (uint32_t)need)))
            b = s->cbuf;
    }
    if (ok && !s->ps_queue)
        ok = (s->ps_queue = calloc(1, sizeof(*s->ps_queue))) != NULL;
    /* In a batch the Close and Parse go with it, no Sync: replies dropped
     * one by one, in turn, and skipped with the Query after an error. */
    if (ok && in_batch)
        ok = q_push(s, Q_SWALLOW, PGW_FE_CLOSE, NULL) && q_push(s, Q_SWALLOW, PGW_FE_PARSE, NULL);
    if (!ok) {
        free(cname);
        pgw_wbuf_deinit(&m);
        pgw_wbuf_deinit(&q);
        if (too_large)
            pgw_session_close(s, "54000", "too much pipelined behind a DEALLOCATE (%llu bytes) "
                              "to rewrite it", (unsigned long long)need);
        else
            pgw_session_close(s, "53200", "out of memory");
        return -1;
    }
    /* Neither fails with the room made above; should one, the buffer is
     * not what the relay read (an insert that fails may have compacted
     * it): the session ends. */
    bool put = insert_here(b, m.data, (uint32_t)m.len) && replace_here(b, old, &q);
    pgw_wbuf_deinit(&m);
    pgw_wbuf_deinit(&q);
    if (!put) {
        free(cname);
        pgw_session_close(s, "53200", "no room to rewrite a DEALLOCATE");
        return -1;
    }
    /* Swallowed as sync_params' are: nothing is outstanding (quiet), so
     * their replies come first.  (sync_queued: no SET among them.) */
    if (!in_batch) {
        s->swallow++;
        s->sync_queued = 0;
    }
    struct ps_queue *pq = s->ps_queue;
    free(pq->qd_cname);
    stmt_unref(reg_of(s), pq->qd_stmt);
    pq->qd_cname = cname;
    pq->qd_stmt = cn->stmt;
    pq->qd_stmt->refs++;
    pq->qd_cc = (uint16_t)cc;
    pq->qd_pos_after = pos_after;
    pq->qd_pos_delta = pos_delta;
    client_remove(s, cn);
    return PGW_PS_DEALLOC_REWRITTEN;
}

/* A reply to a Query of query_dealloc's (h): its DEALLOCATE ran when its
 * CommandComplete comes; an error or the ReadyForQuery before it says it
 * did not, and the client's name stands again. */
static void undo_close(struct pgw_session *s, const struct qent *x);

static void query_dealloc_reply(struct pgw_session *s, struct qent *h, char type)
{
    if (type == PGW_BE_COMMAND_COMPLETE && --h->dealloc_cc > 0)
        return;
    if (type != PGW_BE_COMMAND_COMPLETE) {
        undo_close(s, h);
    } else {
        free(h->cname);                  /* gone for good */
        h->cname = NULL;
    }
    h->dealloc_cc = 0;
    s->ps_queue->qdeallocs--;
}

/* A simple Query of SQL DEALLOCATE of one of the client's statements (PHP's
 * PDO sends it so): answered here as PostgreSQL answers it, the name gone,
 * once what came before is answered (quiet); in a failed transaction the
 * server refuses it (25P02) and the name stays, as in PostgreSQL.  Behind
 * an extended batch with no Sync yet (whose answers come only with this
 * Query's) PostgreSQL runs it after the batch, which it ends: the server
 * deallocates one of pgwharf's statements instead, as among other
 * statements (query_dealloc).  In a batch the server skips it goes to the
 * server as it is: skipped there, as by PostgreSQL. */
int pgw_ps_deallocate_query(struct pgw_session *s, const uint8_t *msg, uint32_t avail,
                            uint32_t total, bool quiet)
{
    if (!s->ps_client || total > PGW_MSG_HDR + PGW_NOTIFY_QUERY_MAX || total <= PGW_MSG_HDR)
        return 0;
    const char *sql = (const char *)msg + PGW_MSG_HDR;
    size_t have = (avail < total ? avail : total) - PGW_MSG_HDR;
    /* (Among other statements only with a server: query_dealloc.) */
    if (!may_be_deallocate(sql, have) && !(s->server && has_substr_ci(sql, have, "DEALLOCATE")))
        return 0;
    if (avail < total)
        return PGW_NOTIFY_MORE;          /* read it whole first */
    size_t len = total - PGW_MSG_HDR;
    if (sql[len - 1] != '\0' || strlen(sql) != len - 1)
        return 0;
    if (s->track.skip_sync || s->track.copy)
        return 0;
    /* Behind an extended batch with no Sync yet PostgreSQL runs it (it ends
     * the batch's implicit transaction), after the batch's messages, whose
     * answers come only with the Query's: pgwharf's statement is
     * deallocated in its place, in the batch (query_dealloc). */
    if (s->track.fe_open > 0)
        return s->server ? query_dealloc(s, sql, len - 1, quiet, true) : 0;
    /* Answers are outstanding but the count may be higher than those to
     * come (a COPY read Syncs): waiting might be for ever. */
    if (!quiet && s->track.count_high)
        return 0;
    char name[PGW_CHANNEL_UTF8_MAX + 1];
    struct pgw_ident_full full = { .cut = false };
    struct ps_client_name *cn = NULL;
    int t = dealloc_target(s, sql, len - 1, name, &full, &cn);
    if (t == DEALLOC_NONE)
        return query_dealloc(s, sql, len - 1, quiet, false);
    char status = s->track.tx_status ? s->track.tx_status : 'I';
    if (t == DEALLOC_WAIT || !quiet || status == 'E') {
        pgw_ident_full_free(&full);
        return t == DEALLOC_WAIT || !quiet ? PGW_NOTIFY_MORE : 0;
    }
    client_remove(s, cn);
    s->query_count++;
    pgw_iobuf_cut(s->cbuf, s->cbuf->parsed, total);
    return pgw_notify_deallocated(s, &full, name, status) < 0 ? -1 : 1;
}

int pgw_ps_close_alone(struct pgw_session *s, const uint8_t *m, uint32_t avail, uint32_t total)
{
    if (s->notify || !pgw_ps_idle(s) || total > PGW_CLOSE_ALONE_MAX || total < PGW_MSG_HDR + 2)
        return 0;
    if (avail < total)
        return PGW_NOTIFY_MORE;          /* read it whole first */
    const uint8_t *body = m + PGW_MSG_HDR;
    uint32_t blen = total - PGW_MSG_HDR;
    if (body[0] == 'S' && blen == 2 && body[1] == 0)
        return 1;                        /* the unnamed statement: gone (drops_unnamed) */
    if (body[0] != 'S' || body[1] == 0 || memchr(body + 1, 0, blen - 1) != body + blen - 1)
        return 0;                        /* a portal, malformed */
    ps_key nkey;
    const char *key_name = name_key(s, (const char *)body + 1, nkey);
    if (!key_name)
        return 0;                        /* PostgreSQL's to refuse */
    struct ps_client_name *cn = client_find(s, key_name);
    if (cn)
        client_remove(s, cn);
    return 1;
}

/* The most bytes of a Parse and its Sync pgw_ps_parse_alone answers: half
 * the relay's buffer, which must hold both whole.  A longer one takes a
 * server. */
#define PS_ALONE_BYTES (PGW_IOBUF_SIZE / 2)

/* The statement of the whole Parse m (a reference taken) a client with no
 * server may have answered here, and its name's key in key (*key_name);
 * NULL if not: the unnamed statement, a name PostgreSQL refuses or the
 * client has (its 42P05 is the server's), a text that may be a LISTEN
 * (notify.c's), or a text and parameter types no server of the pool has
 * prepared in the client's reading of settings (parse_context), or whose
 * last Parse there failed (parsed_ok). */
static struct ps_stmt *alone_stmt(struct pgw_session *s, const uint8_t *m, ps_key key,
                                  const char **key_name)
{
    uint32_t blen = pgw_get_u32(m + 1) - 4;
    const uint8_t *body = m + PGW_MSG_HDR;
    const uint8_t *ne = memchr(body, 0, blen);
    if (!ne || ne == body)
        return NULL;
    const uint8_t *text = ne + 1;
    uint32_t key_len = (uint32_t)(body + blen - text);
    const uint8_t *te = memchr(text, 0, key_len);
    if (!te || text + key_len - te < 3 ||
        (uint64_t)(text + key_len - te - 3) != 4ull * pgw_get_u16(te + 1))
        return NULL;                             /* malformed: the server's to refuse */
    static const char *const listen_kw[] = { "LISTEN", "UNLISTEN" };
    if (pgw_sql_may_start((const char *)text, (size_t)(te - text), listen_kw, 2))
        return NULL;
    *key_name = name_key(s, (const char *)body, key);
    if (!*key_name || client_find(s, *key_name))
        return NULL;                             /* 22021 / 42P05: the server's */
    struct ps_stmt *st = stmt_find(reg_of(s), text, key_len, parse_context(s));
    if (st && !st->parsed_ok) {
        stmt_unref(reg_of(s), st);
        st = NULL;
    }
    return st;
}

int pgw_ps_parse_alone(struct pgw_session *s, const uint8_t *m, size_t have)
{
    if (s->server || s->notify || !pgw_ps_enabled(s) ||
        s->px->cfg->max_prepared_statements < 1 || !pgw_ps_idle(s) || s->settings_pending ||
        have < PGW_MSG_HDR || m[0] != PGW_FE_PARSE)
        return 0;
    uint32_t len = pgw_get_u32(m + 1);
    if (len < 4 || len > PS_ALONE_BYTES - 1 - PGW_MSG_HDR)
        return 0;
    /* Only where the client would wait for a server: one idle for it
     * takes the Parse as before (read there now, a name like any other);
     * and only with statements to share: else the Parse, whole or not,
     * goes to a server as before (a client that stops mid-message holds
     * it under query_timeout, not a wait for more with no server). */
    if (!s->pool || reg_of(s)->map.count == 0 || pgw_pool_idle_for_next(s->pool))
        return 0;
    if (have < len + 1u + PGW_MSG_HDR)
        return PGW_NOTIFY_MORE;                  /* the Parse and what follows it, whole */
    const uint8_t *next = m + len + 1;
    if (next[0] != PGW_FE_SYNC || pgw_get_u32(next + 1) != 4)
        return 0;                                /* a Describe, a Bind, a Flush...: a server's */
    ps_key key;
    const char *key_name = NULL;
    struct ps_stmt *st = alone_stmt(s, m, key, &key_name);
    if (!st)
        return 0;
    struct pgw_wbuf w;
    pgw_wbuf_init(&w);
    pgw_wbuf_msg_end(&w, pgw_wbuf_msg_begin(&w, PGW_BE_PARSE_COMPLETE));
    bool ok = !w.failed && client_add(s, key_name, (const char *)m + PGW_MSG_HDR, st);
    if (ok) {
        client_find(s, key_name)->unread = true;     /* the name's reference: st's */
        reg_of(s)->st.client_parses++;
        reg_of(s)->st.hits++;
        s->ps_parse_count++;
        pgw_iobuf_cut(s->cbuf, s->cbuf->parsed, len + 1);
        ok = pgw_session_send(s, &w);
    } else {
        stmt_unref(reg_of(s), st);
    }
    pgw_wbuf_deinit(&w);
    if (!ok) {
        pgw_session_close(s, "53200", "out of memory");
        return -1;
    }
    return s->state == PGW_SS_CLOSING ? -1 : 1;
}

static bool is_cmd(const char *sql, const char *cmd);

/* Does this statement text drop every prepared statement of the session? */
static bool drops_all(const char *sql)
{
    return is_cmd(sql, "DEALLOCATE ALL") || is_cmd(sql, "DEALLOCATE PREPARE ALL") ||
           is_cmd(sql, "DISCARD ALL");
}

/* A DEALLOCATE ALL (or DISCARD ALL) is on its way to the server: what it
 * has prepared may be gone before the next message of the batch runs, so
 * each is closed and prepared again at its next use there (a Close of one
 * that is gone is no error).  Its CommandComplete (on_discard) drops the
 * ones not used since.  Bound (Parsed unnamed: the Bind that follows is
 * of it), the next Execute runs it (arm); a Query's entry is marked by
 * the caller. */
static void drops_all_sent(struct pgw_session *s, bool arm)
{
    if (arm && !s->ps_queue)
        s->ps_queue = calloc(1, sizeof(*s->ps_queue));
    if (arm && s->ps_queue)
        s->ps_queue->drop_armed = true;
    struct ps_server *ss = s->server ? s->server->user_state : NULL;
    if (!ss)
        return;
    for (struct pgw_list *n = ss->lru.next; n != &ss->lru; n = n->next)
        pgw_container_of(n, struct ps_server_stmt, lru)->stale = true;
}

/* A Parse, Bind, Describe or Close PostgreSQL cannot read (a string
 * without its NUL, counts past the end): it answers ERROR 08P01 before it
 * looks at any name, or skips it after an error, and the session goes
 * on.  Sent as it is for the server to do so (a server that took it
 * anyway, under the client's own name, is retired: as_is). */
static enum pgw_ps_action malformed(struct pgw_session *s, char type)
{
    if (!q_push(s, Q_PASS, type, NULL)) {
        pgw_session_close(s, "53200", "out of memory");
        return PGW_PS_FAILED;
    }
    q_tail(s)->as_is = true;
    return PGW_PS_FORWARD;
}

/* ---- the client's unnamed statement ----
 *
 * PostgreSQL keeps a session's unnamed statement until its next unnamed
 * Parse or simple Query (or a Close of it), across transactions.  lib/pq
 * (Go) Parses into it and Describes it with a Sync, then Binds it in the
 * next round trip: in transaction mode that Bind may reach another server,
 * where the statement is not (26000), or is another client's (pgwharf
 * drops that one at the link: sync_params).  pgwharf keeps a copy of the
 * client's last unnamed Parse, taken for the client's once the server
 * answers it with ParseComplete (a Parse that fails, or that the server
 * skips after an error, leaves none, where PostgreSQL would have the old
 * one only in the second case: then 26000 rather than a guess), and
 * sends it ahead of a Bind or Describe of the unnamed statement on a
 * server that does not have it, its ParseComplete dropped. */
#define PS_UNNAMED_MAX (64 * 1024)

void pgw_ps_unnamed_gone(struct pgw_session *s)
{
    s->ps_unnamed_ok = false;
    if (++s->ps_unnamed_gen == 0)
        s->ps_unnamed_gen = 1;
}

/* The client's unnamed Parse m (total bytes) is on its way: its copy,
 * and the generation its entry carries (0: none kept). */
static uint32_t unnamed_copy(struct pgw_session *s, const uint8_t *m, uint32_t total)
{
    pgw_ps_unnamed_gone(s);
    if (total > PS_UNNAMED_MAX)
        return 0;
    /* Grown for a large text, given back once they are small again. */
    if (total > s->ps_unnamed_cap || (s->ps_unnamed_cap > 4096 && total <= s->ps_unnamed_cap / 4)) {
        uint8_t *p = realloc(s->ps_unnamed, total);
        if (!p)
            return 0;                    /* none kept: its Bind elsewhere gets 26000 */
        s->ps_unnamed = p;
        s->ps_unnamed_cap = total;
    }
    memcpy(s->ps_unnamed, m, total);
    s->ps_unnamed_len = total;
    return s->ps_unnamed_gen;
}

static void unnamed_save(struct pgw_session *s, struct qent *x, const uint8_t *m, uint32_t total)
{
    x->unnamed_gen = unnamed_copy(s, m, total);
}

void pgw_ps_unnamed_queued(struct pgw_session *s, const uint8_t *m)
{
    s->ps_unnamed_pipe_gen = unnamed_copy(s, m, pgw_get_u32(m + 1) + 1);
}

/* A Bind or Describe of the unnamed statement at b's parse position: on a
 * server that does not have the client's, it is Parsed there first.  Not
 * in a failed transaction (the server's 25P02 or 26000 answers it). */
static enum pgw_ps_action unnamed_ensure(struct pgw_session *s, struct pgw_iobuf *b)
{
    if (!s->ps_unnamed_ok || !s->server || pgw_relay_unnamed_current(s, s->server))
        return PGW_PS_FORWARD;
    if (tx_pending(s))
        return PGW_PS_WAIT;              /* whether it is failed is still to be known */
    if (s->track.tx_status == 'E')
        return PGW_PS_FORWARD;
    if (!need_room(s, b, s->ps_unnamed_len))
        return PGW_PS_NEED_ROOM;
    if (!q_push(s, Q_SWALLOW, PGW_FE_PARSE, NULL)) {
        pgw_session_close(s, "53200", "out of memory");
        return PGW_PS_FAILED;
    }
    insert_here(b, s->ps_unnamed, s->ps_unnamed_len);
    /* The server's once its ParseComplete comes (skipped after an error
     * in the batch, or failed, it is not: the next Bind tries again). */
    q_tail(s)->unnamed_gen = s->ps_unnamed_gen;
    q_tail(s)->unnamed_inject = true;
    s->server->user_unnamed = PGW_UNNAMED_OWN;
    return PGW_PS_FORWARD;
}

static enum pgw_ps_action on_parse(struct pgw_session *s, struct pgw_iobuf *b, uint32_t *total)
{
    const uint8_t *body = b->data + b->parsed + 5;
    uint32_t blen = *total - 5;
    const uint8_t *ne = memchr(body, 0, blen);
    /* The key is the text (NUL-terminated) and the parameter types: a
     * malformed one is never registered (the server refuses it, and the
     * text is read as a C string later). */
    const uint8_t *key = ne ? ne + 1 : NULL;
    uint32_t key_len = ne ? (uint32_t)(body + blen - key) : 0;
    const uint8_t *te = ne ? memchr(key, 0, key_len) : NULL;
    if (!te || key + key_len - te < 3 ||
        (uint64_t)(key + key_len - te - 3) != 4ull * pgw_get_u16(te + 1))
        return malformed(s, PGW_FE_PARSE);
    if (memchr(ne + 1, 0, (size_t)(body + blen - (ne + 1))) && drops_all((const char *)ne + 1))
        drops_all_sent(s, *body == '\0');
    const char *name = (const char *)body;
    /* The unnamed statement is the server's own; so is a name PostgreSQL
     * refuses as text in the client's encoding before it reads the rest
     * (22021, 22P05): sent as it is, for the server to say so. */
    ps_key nkey;
    const char *key_name = *name ? name_key(s, name, nkey) : NULL;
    if (!key_name) {
        enum pgw_ps_action a;
        if (!*name && dealloc_parse(s, b, total, ne + 1, body + blen, &a))
            return a;
        if (q_push(s, Q_PASS, PGW_FE_PARSE, NULL)) {
            q_tail(s)->as_is = *name != '\0';
            if (!*name)
                unnamed_save(s, q_tail(s), b->data + b->parsed, *total);
        }
        return PGW_PS_FORWARD;
    }
    struct ps_registry *reg = reg_of(s);
    if (name_unsettled(s, key_name, NULL))
        return PGW_PS_WAIT;
    struct ps_client_name *had = client_find(s, key_name), *displaced = NULL;
    if (had) {
        /* Behind a DEALLOCATE ALL the name is free again: that request's
         * answer says whether it ran; in this batch it runs first (or
         * the batch fails before the Parse, which the server then skips:
         * the name's statement comes back, prev). */
        int drop = drop_unsettled(s);
        if (drop == DROP_EARLIER)
            return PGW_PS_WAIT;
        if (drop == DROP_THIS_BATCH) {
            displaced = had;
            had = NULL;
        }
    }
    if (had) {
        const char *text = (const char *)ne + 1;
        /* The server's own 42P05, whatever the transaction's state; the DO
         * block only for a name too long to quote back (or a malformed
         * message, which the server refuses anyway). */
        bool own = strlen(name) < PS_BNAME_MAX &&
                   memchr(text, 0, (size_t)(body + blen - (const uint8_t *)text));
        enum pgw_ps_action a = own ? dup_error_own(s, b, name, *total)
                               : dup_error(s, b, name, *total) ? PGW_PS_DROPPED
                                                               : PGW_PS_NEED_ROOM;
        if (a == PGW_PS_FAILED)
            return a;
        if (a == PGW_PS_NEED_ROOM) {
            struct ps_server *ss = server_state(s);
            s->ps_room_need = own ? 2 * *total + 64 + (ss ? ss->nreclose : 0) * CLOSE_BYTES
                                  : DUP_BYTES(*total);
            return PGW_PS_NEED_ROOM;
        }
        reg->st.client_parses++;
        s->ps_parse_count++;
        pgw_iobuf_cut(b, b->parsed, *total);
        return PGW_PS_DROPPED;
    }
    struct ps_stmt *st = stmt_get(reg, key, key_len, parse_context_now(s));
    if (!st)
        goto oom;
    if (st->refs > 1 && name_unsettled(s, key_name, st)) {
        stmt_unref(reg, st);
        return PGW_PS_WAIT;
    }
    /* A reading of it still to be checked (check_describe) may retire it:
     * the Parse waits to know whether it gets it or a fresh one. */
    enum pgw_ps_action held = st->refs > 1 ? check_hold(s, b, st, NULL) : PGW_PS_FORWARD;
    if (held != PGW_PS_FORWARD) {
        stmt_unref(reg, st);
        return held;
    }
    /* The Parse is replaced by one under pgwharf's name (a few bytes
     * longer at most), maybe after a Close or two for the LRU. */
    uint32_t grow = send_parse_len(st) > *total ? send_parse_len(st) - *total : 0;
    struct ps_server *ss = server_state(s);
    struct ps_server_stmt *e = ss ? server_find(ss, st) : NULL;
    /* Answered here when the server has it, unless the transaction is a
     * failed one: while that is still to be known, the Parse waits. */
    if (e && !e->stale && tx_pending(s) && text_refusable(st)) {
        stmt_unref(reg, st);
        return PGW_PS_WAIT;
    }
    if (!need_room(s, b, grow + (3 + (ss ? ss->nreclose : 0)) * CLOSE_BYTES)) {
        stmt_unref(reg, st);
        return PGW_PS_NEED_ROOM;
    }
    reg->st.client_parses++;
    s->ps_parse_count++;
    struct ps_stmt *prev = NULL;
    if (displaced) {
        prev = displaced->stmt;
        prev->refs++;
        client_remove(s, displaced);
    }
    if (!client_add(s, key_name, name, st)) {
        stmt_unref(reg, st);
        stmt_unref(reg, prev);
        goto oom;
    }
    /* The name stands only if the server does not skip this Parse (an
     * earlier error in the batch, or its own): kept with the entry. */
    char *cname = names_dup(key_name, name);     /* name points into b, which moves */
    if (!cname) {
        stmt_unref(reg, prev);
        goto oom;
    }
    /* In a failed transaction the server answers it (25P02), as it would
     * without pgwharf, and the client gets no name. */
    bool refused = e && !e->stale && parse_refused(s, st);
    if (e && !e->stale && !refused) {
        /* The server has it: answer ParseComplete ourselves. */
        server_hit(ss, e);
        pgw_iobuf_cut(b, b->parsed, *total);
        if (!q_push(s, Q_FAKE, PGW_FE_PARSE, st)) {
            free(cname);
            stmt_unref(reg, prev);
            goto oom;
        }
        q_tail(s)->cname = cname;
        q_tail(s)->prev = prev;
        return PGW_PS_DROPPED;
    }
    if (!ensure_prepared(s, b, st, false)) {
        free(cname);
        stmt_unref(reg, prev);
        goto oom;
    }
    /* Send the Parse under pgwharf's name. */
    struct pgw_wbuf m = { .data = (uint8_t *)send_parse(st), .len = send_parse_len(st) };
    replace_here(b, *total, &m);
    *total = send_parse_len(st);
    if (!q_push(s, Q_PASS, PGW_FE_PARSE, st)) {
        free(cname);
        stmt_unref(reg, prev);
        goto oom;
    }
    q_tail(s)->cname = cname;
    q_tail(s)->prev = prev;
    q_tail(s)->had = refused;
    q_tail(s)->pinned = st->pinned != NULL;
    /* Learnt with it (inject_describe), sent as part of it; once its
     * shape is known, the reading checked (check_describe; nothing waits
     * for the answer but a message using st under another name). */
    uint32_t dlen;
    const char *names = q_tail(s)->cname;
    if (!refused && st->shaped) {
        if (check_describe(s, b, st, NULL, b->parsed + send_parse_len(st), learn_now(s, st, true),
                           names, false, &dlen))
            *total += dlen;
    } else if (!refused && learn_now(s, st, true) &&
               inject_describe(s, b, st, b->parsed + send_parse_len(st), &dlen)) {
        *total += dlen;
    }
    return PGW_PS_FORWARD;
oom:
    pgw_session_close(s, "53200", "out of memory");
    return PGW_PS_FAILED;
}

/* What PostgreSQL answers a Bind or Describe of st (which the server
 * lacks) in a failed transaction, where the Parse pgwharf sends ahead of
 * it is refused (25P02).  PostgreSQL looks at the statement first: a Bind
 * whose parameters do not match gets 08P01 (FAIL_BIND, counts in *nf and
 * *np), and a statement that returns no rows is described (FAIL_DESCRIBE:
 * ParameterDescription, NoData); else 25P02 (FAIL_AS_IS).  Known once
 * the statement was described (inject_describe). */
enum { FAIL_AS_IS, FAIL_BIND, FAIL_DESCRIBE };

static int failed_tx_answer(const struct ps_stmt *st, char type, const uint8_t *body,
                            uint32_t blen, uint32_t name_off, uint16_t *nf, uint16_t *np)
{
    if (!st->described || !text_refusable(st))
        return FAIL_AS_IS;
    if (type == PGW_FE_DESCRIBE)
        return st->rows ? FAIL_AS_IS : FAIL_DESCRIBE;
    const uint8_t *p = memchr(body + name_off, 0, blen - name_off) + 1, *end = body + blen;
    if (end - p < 2)
        return FAIL_AS_IS;
    *nf = pgw_get_u16(p);
    p += 2 + 2 * (size_t)*nf;
    if (p + 2 > end)
        return FAIL_AS_IS;       /* malformed: the server says so */
    *np = pgw_get_u16(p);
    return (*nf > 1 && *nf != *np) || *np != st->nparams ? FAIL_BIND : FAIL_AS_IS;
}

static enum pgw_ps_action named_send(struct pgw_session *s, struct pgw_iobuf *b, char type,
                                     uint32_t *total, uint32_t name_off, const char *key_name,
                                     struct ps_stmt *st, struct ps_stmt *own);

/* The first Bind or Describe of an unread name (pgw_ps_parse_alone): its
 * Parse is read now, as PostgreSQL reads a Parse sent now -- with the
 * client's settings now (that reading's statement, never a retired one)
 * and the tables as they are.  A server that has the statement may hold
 * a reading of tables changed since (an ALTER TABLE after its Parse
 * there, which PostgreSQL answers with 0A000 at a Bind): its copy is
 * closed and the text Parsed afresh there under the same pgwharf name,
 * with a Describe of pgwharf's whose answer this message waits for
 * (check_describe for the name: shape_seen gives the name a statement of
 * its own when that reading is not the statement's, and the reading is
 * the name's from then on).  A text that fails now (a table dropped)
 * gets its error in place of this message, and the name stays unread.
 * A statement whose result PostgreSQL does not fix (shape_fixed) has
 * nothing to read, and in a failed transaction the server refuses the
 * Parse: those go as any name's.  true when *a says what the relay does
 * with the message; false to go on as for any name. */
static bool unread_use(struct pgw_session *s, struct pgw_iobuf *b, uint32_t name_off,
                       const char *key_name, struct ps_client_name *cn, enum pgw_ps_action *a)
{
    if (!s->server || tx_failed(s))
        return false;
    if (tx_pending(s)) {
        *a = PGW_PS_WAIT;                /* whether it is failed is still to be known */
        return true;
    }
    struct ps_registry *reg = reg_of(s);
    struct ps_stmt *old = cn->stmt;
    uint64_t ctx = parse_context_now(s);
    /* The reading now is the name's only once its check answers
     * (shape_seen): skipped after an error earlier in the batch, the name
     * stays the statement its Parse was answered with, which what a
     * failed transaction needs was learnt for (failed_tx_answer). */
    struct ps_stmt *st = old;
    if (old->retired || old->ctx != ctx) {
        st = stmt_get(reg, old->parse + old->key_off, old->key_len, ctx);
        if (!st)
            goto oom;
    } else {
        st->refs++;
    }
    if (!shape_fixed(st)) {
        if (st != old) {
            cn->stmt = st;               /* nothing to check: the name's now */
            st->refs++;
            stmt_unref(reg, old);
        }
        stmt_unref(reg, st);
        cn->unread = false;
        return false;
    }
    *a = name_unsettled(s, key_name, st) ? PGW_PS_WAIT : check_hold(s, b, st, key_name);
    if (*a != PGW_PS_FORWARD) {
        stmt_unref(reg, st);
        return true;
    }
    struct ps_server *ss = server_state(s);
    if (!ss) {
        stmt_unref(reg, st);
        goto oom;
    }
    if (!need_room(s, b, send_parse_len(st) + (3 + ss->nreclose) * CLOSE_BYTES + CHECK_BYTES)) {
        stmt_unref(reg, st);
        *a = PGW_PS_NEED_ROOM;
        return true;
    }
    char bname[PS_BNAME_MAX] = "";       /* the name moves with what goes ahead of it */
    const char *name = (const char *)b->data + b->parsed + PGW_MSG_HDR + name_off;
    size_t nl = strlen(name);
    if (nl < sizeof(bname))
        memcpy(bname, name, nl + 1);
    struct ps_server_stmt *e = server_find(ss, st);
    if (e)
        e->stale = true;                 /* closed, and Parsed again (ensure_prepared) */
    uint32_t dlen;
    /* (The reference taken above holds st: ensure_prepared may drop
     * other refs.) */
    bool ok = ensure_prepared(s, b, st, true) &&
              check_describe(s, b, st, NULL, b->parsed, learn_now(s, st, true), cn->name, true,
                             &dlen);
    if (ok) {
        q_tail(s)->unread = true;
        memcpy(q_tail(s)->bname, bname, strlen(bname) + 1);     /* its errors name it */
    }
    stmt_unref(reg, st);
    if (!ok)
        goto oom;
    *a = PGW_PS_WAIT;
    return true;
oom:
    pgw_session_close(s, "53200", "out of memory");
    *a = PGW_PS_FAILED;
    return true;
}

/* A Close of a statement name (key_name) the client has not Parsed: it
 * may name a statement the client PREPAREd in SQL, which PostgreSQL keeps
 * in the same namespace as the protocol's and a Close deallocates (SQL
 * PREPARE is server-local: pgwharf renames only protocol statements).
 * Answered here, it stayed on the server: an EXECUTE of it ran where
 * PostgreSQL answers 26000, a PREPARE of the name again got 42P05.  The
 * server's to close, as a DEALLOCATE of a name the client has not prepared
 * is, while the client holds it: in a transaction, or in a batch open
 * there (CLOSE_SEND).  Behind requests not answered yet, opening a batch
 * of its own, it waits for their answers (CLOSE_WAIT): in a transaction
 * then it goes on, else the server goes back (the Close is answered with
 * none, pgw_ps_close_alone) -- sent on, a Close and a Flush kept the
 * server with the idle client until its next Sync.  Answered here as
 * before (CLOSE_ANSWER): with nothing under way outside a transaction (a
 * server still linked for a cancel in flight or a release), where the
 * client's SQL statements are on some server it may never get again, as
 * with no server; where the count of answers may be off (a COPY); and a
 * name of pgwharf's form (PGW_...), whose Close would drop the pool's
 * statement under the other clients of that server. */
enum close_unknown { CLOSE_ANSWER, CLOSE_SEND, CLOSE_WAIT };

static enum close_unknown close_unknown(const struct pgw_session *s, const char *key_name)
{
    const struct pgw_track *t = &s->track;
    if (strncmp(key_name, "PGW_", 4) == 0 || t->copy || t->copy_doubt || t->count_high ||
        s->notify)
        return CLOSE_ANSWER;
    if (t->fe_open > 0)
        return CLOSE_SEND;
    if (t->sync_out > 0)
        return CLOSE_WAIT;
    return t->tx_status == 'T' || t->tx_status == 'E' ? CLOSE_SEND : CLOSE_ANSWER;
}

/* Bind (portal\0 stmt\0 ...), Describe/Close ('S'|'P' name\0). */
static enum pgw_ps_action on_named(struct pgw_session *s, struct pgw_iobuf *b, char type,
                                   uint32_t *total)
{
    const uint8_t *body = b->data + b->parsed + 5;
    uint32_t blen = *total - 5;
    uint32_t name_off;
    if (type == PGW_FE_BIND) {
        const uint8_t *pe = memchr(body, 0, blen);
        if (!pe)
            goto bad;
        name_off = (uint32_t)(pe - body) + 1;
    } else {
        if (blen < 2)
            goto bad;
        if (body[0] != 'S') {        /* a portal: nothing to do */
            q_push(s, Q_PASS, type, NULL);
            return PGW_PS_FORWARD;
        }
        name_off = 1;
    }
    if (name_off >= blen || !memchr(body + name_off, 0, blen - name_off))
        goto bad;
    const char *name = (const char *)body + name_off;
    ps_key nkey;
    const char *key_name = *name ? name_key(s, name, nkey) : NULL;
    if (type == PGW_FE_BIND && !*name && s->unnamed_sets) {
        s->settings_pending = true;      /* a SET Parsed unnamed, run now */
        s->settings_gen++;
    }
    if (!key_name) {
        if (!*name && (type == PGW_FE_BIND || type == PGW_FE_DESCRIBE)) {
            enum pgw_ps_action a = unnamed_ensure(s, b);
            if (a != PGW_PS_FORWARD)
                return a;
        }
        q_push(s, Q_PASS, type, NULL);   /* the server's, or its 22021/22P05 (on_parse) */
        return PGW_PS_FORWARD;
    }
    struct ps_client_name *cn = client_find(s, key_name);
    if (name_unsettled(s, key_name, cn ? cn->stmt : NULL) ||
        (cn && type != PGW_FE_CLOSE && drop_unsettled(s) == DROP_EARLIER))
        return PGW_PS_WAIT;
    if (type == PGW_FE_CLOSE && !cn) {
        switch (close_unknown(s, key_name)) {
        case CLOSE_SEND:
            if (!q_push(s, Q_PASS, type, NULL)) {
                pgw_session_close(s, "53200", "out of memory");
                return PGW_PS_FAILED;
            }
            return PGW_PS_FORWARD;
        case CLOSE_WAIT:
            return PGW_PS_WAIT;
        default:
            break;
        }
    }
    if (type == PGW_FE_CLOSE) {
        /* Answered here; an unknown name is no error, as in PostgreSQL.
         * The name goes now (a Parse further on may take it again), and
         * comes back if the server skips the Close (undo_close). */
        char *cname = cn ? names_dup(cn->name, names_shown(cn->name)) : NULL;
        if ((cn && !cname) || !q_push(s, Q_FAKE, PGW_FE_CLOSE, cn ? cn->stmt : NULL)) {
            free(cname);
            pgw_session_close(s, "53200", "out of memory");
            return PGW_PS_FAILED;
        }
        q_tail(s)->cname = cname;
        if (cn)
            client_remove(s, cn);
        pgw_iobuf_cut(b, b->parsed, *total);
        return PGW_PS_DROPPED;
    }
    if (!cn) {
        /* Unknown to pgwharf: the server answers 26000 itself. */
        q_push(s, Q_PASS, type, NULL);
        return PGW_PS_FORWARD;
    }
    enum pgw_ps_action ua;
    if (cn->unread && unread_use(s, b, name_off, key_name, cn, &ua))
        return ua;
    /* The statement the client Parsed, read with its settings then (as
     * PostgreSQL keeps a statement's reading, whatever the session's
     * settings since): used on a server that has it, or prepared there
     * when the client's settings are those again.  Else a server would
     * read it now, with the client's settings since: the statement of
     * those settings goes there instead (the server's copy would be
     * another reading under the old one's name, for every client of it),
     * for this message only -- the name keeps its own, so the client gets
     * its Parse's reading back wherever that is to be had. */
    struct ps_stmt *st = cn->stmt;
    uint64_t ctx = parse_context_now(s);
    if (st->ctx == ctx || ensure_bytes(s, st, NULL) == 0)
        return named_send(s, b, type, total, name_off, key_name, st, st);
    struct ps_stmt *now = stmt_get(reg_of(s), st->parse + st->key_off, st->key_len, ctx);
    if (!now) {
        pgw_session_close(s, "53200", "out of memory");
        return PGW_PS_FAILED;
    }
    /* That statement's Parse may be in a batch ahead, under another of
     * the client's names, still to be skipped (name_unsettled): the
     * server may not have it after all. */
    if (name_unsettled(s, key_name, now)) {
        stmt_unref(reg_of(s), now);
        return PGW_PS_WAIT;
    }
    if (!now->pdesc && st->pdesc && !st->retired && (now->pdesc = malloc(st->pdesc_len))) {
        /* The client's statement still: the parameter types it was
         * given stay (pinned), whatever its tables are now.  Not a
         * retired one's (its tables changed under it, on_error): now is
         * shared, and other clients' new Parses would get the old types. */
        memcpy(now->pdesc, st->pdesc, st->pdesc_len);
        now->pdesc_len = st->pdesc_len;
        now->nparams = st->nparams;
        pin_types(now);
    }
    if (!now->described && st->described && !st->retired && now->pdesc &&
        now->nparams == st->nparams) {
        /* What a failed transaction needs (failed_tx_answer): the
         * client's statement's, which PostgreSQL checks there.  Not
         * learnt for now, which no Describe may reach before the next
         * failed transaction (a Bind's 08P01 came out as 25P02). */
        now->rows = st->rows;
        now->described = true;
    }
    enum pgw_ps_action a = named_send(s, b, type, total, name_off, key_name, now, st);
    stmt_unref(reg_of(s), now);
    return a;
bad:
    return malformed(s, type);
}

/* on_named's Bind or Describe of one of the client's names (key_name, at
 * name_off in the body), the name of statement own, sent as statement st. */
static enum pgw_ps_action named_send(struct pgw_session *s, struct pgw_iobuf *b, char type,
                                     uint32_t *total, uint32_t name_off, const char *key_name,
                                     struct ps_stmt *st, struct ps_stmt *own)
{
    /* A reading of st still to be checked on this server: its answer
     * first (it may be one this message must not run on). */
    enum pgw_ps_action held = check_hold(s, b, st, key_name);
    if (held != PGW_PS_FORWARD)
        return held;
    const uint8_t *body = b->data + b->parsed + 5;
    uint32_t blen = *total - 5;
    const char *name = (const char *)body + name_off;
    size_t old_nl = strlen(name), new_nl = strlen(st->name);
    char bname[PS_BNAME_MAX] = "";       /* name points into b, renamed below */
    if (old_nl < sizeof(bname))
        memcpy(bname, name, old_nl + 1);
    /* The result the client has: its statement's, or st's. */
    struct ps_stmt *ref = own->shaped ? own : st;
    struct ps_server_stmt *e;
    uint32_t ensure = ensure_bytes(s, st, &e);
    if (!ensure && e && !e->fresh && reading_differs(e, ref) && !tx_failed(s)) {
        /* Its reading here differs, and no message failed for it since it
         * was told: read again (below) before this one fails -- its tables
         * may be as they were (a transaction that changed them rolled
         * back), where PostgreSQL, which reads it again then, runs it. */
        e->stale = true;
        ensure = ensure_bytes(s, st, &e);
    }
    uint16_t nf = 0, np = 0;
    int fail = ensure && *bname ? failed_tx_answer(st, type, body, blen, name_off, &nf, &np)
                                : FAIL_AS_IS;
    if (fail != FAIL_AS_IS && !tx_failed(s)) {
        if (tx_pending(s))
            return PGW_PS_WAIT;  /* whether it is failed is still to be known */
        fail = FAIL_AS_IS;
    }
    if (ensure && ref->shaped && !tx_failed(s)) {
        /* Prepared here now, the text is read as its tables are: whether
         * that gives the client's result is asked first (check_describe),
         * this message waiting for the answer (check_hold).  Not in a
         * failed transaction, where the Parse is refused and nothing runs;
         * while that is still to be known, it waits. */
        if (tx_pending(s))
            return PGW_PS_WAIT;
        if (!need_room(s, b, ensure + CHECK_BYTES))
            return PGW_PS_NEED_ROOM;
        uint32_t dlen;
        st->refs++;                      /* ensure_prepared may drop other refs */
        bool ok = ensure_prepared(s, b, st, true) &&
                  check_describe(s, b, st, ref, b->parsed, learn_now(s, st, true), NULL, true,
                                 &dlen);
        if (ok)
            memcpy(q_tail(s)->bname, bname, strlen(bname) + 1);     /* its errors name it */
        stmt_unref(reg_of(s), st);
        if (!ok) {
            pgw_session_close(s, "53200", "out of memory");
            return PGW_PS_FAILED;
        }
        return PGW_PS_WAIT;
    }
    /* The server's copy gives another result than the client's: 0A000, as
     * PostgreSQL answers a statement whose tables changed so (shape_fail).
     * In a failed transaction a Describe gets the server's 25P02 first. */
    bool shape_fail = ensure == 0 && reading_differs(e, ref);
    if (shape_fail && type == PGW_FE_DESCRIBE) {
        if (tx_pending(s))
            return PGW_PS_WAIT;
        shape_fail = !tx_failed(s);
    }
    /* Its text was scanned at its Parse, maybe in another transaction or
     * on another server: a Bind runs it here (a SET: settings_gen, even
     * with one unanswered already). */
    if (type == PGW_FE_BIND && s->server) {
        if (!st->words_known) {
            st->words = pgw_relay_text_words(s->px, st->parse + PGW_MSG_HDR,
                                             st->parse_len - PGW_MSG_HDR, UINT32_MAX);
            st->words_known = true;
        }
        pgw_relay_note_bound_words(s, st->words, st->parse + PGW_MSG_HDR,
                                   st->parse_len - PGW_MSG_HDR);
    }
    if (fail == FAIL_DESCRIBE) {
        /* Answered here: nothing to send (nothing prepared either). */
        if (!q_push(s, Q_FAKE, PGW_FE_DESCRIBE, st)) {
            pgw_session_close(s, "53200", "out of memory");
            return PGW_PS_FAILED;
        }
        pgw_iobuf_cut(b, b->parsed, *total);
        return PGW_PS_DROPPED;
    }
    /* Learn what a failed transaction needs of it, while none is. */
    bool learn = !shape_fail && learn_now(s, st, ensure > 0);
    uint32_t dlen;
    if (!need_room(s, b, ensure + (uint32_t)new_nl + 8 + (learn ? CLOSE_BYTES : 0) +
                             (shape_fail ? (uint32_t)sizeof(fail_bind) : 0)))
        return PGW_PS_NEED_ROOM;
    /* ensure_prepared may insert ahead of the message (body and name move
     * with it); the name is renamed in place after that, by offset. */
    st->refs++;                  /* ensure_prepared may drop other refs */
    bool ok = ensure_prepared(s, b, st, true);
    if (ok && fail == FAIL_BIND) {
        struct qent *x = q_tail(s);          /* the Parse ensure_prepared sent */
        if (x && x->type == PGW_FE_PARSE && x->stmt == st && x->kind == Q_SWALLOW) {
            x->bind_refused = true;
            x->bind_formats = nf;
            x->bind_params = np;
            memcpy(x->bname, bname, strlen(bname) + 1);
        }
    }
    if (ok && learn && (ok = inject_describe(s, b, st, b->parsed, &dlen)))
        memcpy(q_tail(s)->bname, bname, strlen(bname) + 1);     /* its errors name it */
    /* shape_fail: a Describe is sent as one of PGW_0 (its 26000 becomes
     * 0A000, after the ParameterDescription PostgreSQL sends first); a
     * Bind goes as ever -- PostgreSQL checks its parameters before the
     * plan, and the server does, running nothing -- with a Bind of PGW_0
     * after it, which fails in its place. */
    bool as_fail = shape_fail && type == PGW_FE_DESCRIBE;
    const char *to = as_fail ? "PGW_0" : st->name;
    if (as_fail)
        new_nl = strlen(to);
    ok = ok && rename_here(b, name_off, (uint32_t)old_nl, to, (uint32_t)new_nl);
    if (ok) {
        *total = *total - (uint32_t)old_nl + (uint32_t)new_nl;
        ok = q_push(s, Q_PASS, type, as_fail ? NULL : st);
        if (ok)
            memcpy(q_tail(s)->bname, bname, strlen(bname) + 1);
        if (ok && !*bname && own != st && !as_fail) {
            own->refs++;                 /* no name has st: found by own (backend_error) */
            q_tail(s)->named = own;
        }
        if (ok && shape_fail)
            e->fresh = false;            /* the next one reads it again */
        if (ok && as_fail) {
            q_tail(s)->shape_err = true;
            q_tail(s)->ref = ref;
            ref->refs++;
        } else if (ok && shape_fail) {
            q_tail(s)->shape_bind = true;
            pgw_iobuf_insert(b, b->parsed + *total, fail_bind, sizeof(fail_bind));
            *total += (uint32_t)sizeof(fail_bind);
            ok = q_push(s, Q_PASS, PGW_FE_BIND, NULL);
            if (ok)
                q_tail(s)->shape_err = true;
        }
    }
    stmt_unref(reg_of(s), st);
    if (!ok) {
        pgw_session_close(s, "53200", "out of memory");
        return PGW_PS_FAILED;
    }
    if (type == PGW_FE_BIND) {
        s->ps_bind_count++;
        if (shape_fail)
            return PGW_PS_FORWARD;       /* nothing of it runs */
        if (drops_all((const char *)st->parse + st->key_off))
            drops_all_sent(s, true);
        /* A LISTEN or UNLISTEN of its: run in a transaction */
        const char *text = (const char *)st->parse + st->key_off;
        if (pgw_notify_may_start((uint8_t)*text) && !pgw_notify_tx_bound(s, key_name, text))
            return PGW_PS_FAILED;
    }
    return PGW_PS_FORWARD;
}

void pgw_ps_copy_sent(struct pgw_session *s, char type)
{
    struct ps_queue *q = s->ps_queue;
    if (q && type != PGW_FE_COPY_DATA) {
        q->copy_ends++;
        q->gap = true;
        q->gap_flushed = false;
    }
}

/* A COPY FROM STDIN reads a message other than CopyData, CopyDone,
 * CopyFail, Flush or Sync: PostgreSQL 14 and later fail it with 08P01
 * after reading only the message's type, and, having lost its place in
 * the stream, end the connection (FATAL 08P01).  (Before 14 it reads the
 * whole message and fails only the COPY.) */
static bool copy_reads_one_type(const struct pgw_session *s)
{
    return s->server && s->server->server_version >= 140000;
}

/* The client gets what PostgreSQL answers there, and the session ends
 * (its server, mid-COPY, is closed).  pgwharf answers such a Parse or
 * Close itself, or sends a Parse of its own before a Bind: the server
 * would have let the COPY go on, or named the wrong message. */
static void copy_refused(struct pgw_session *s, char type)
{
    struct pgw_wbuf m;
    pgw_wbuf_init(&m);
    pgw_wire_error(&m, "ERROR", "08P01", "unexpected message type 0x%02X during COPY from stdin",
                   (unsigned)(uint8_t)type);
    if (!m.failed && !s->sskip)
        (void)emit_bytes(s, m.data, (uint32_t)m.len);
    pgw_wbuf_deinit(&m);
    pgw_session_close(s, "08P01", "terminating connection because protocol synchronization "
                      "was lost");
}

/* Drop the Syncs after the head that the COPY just ended well read as
 * its own (all of its window): they get no ReadyForQuery, and the replies
 * pgwharf makes itself after them would wait for one and come one late.
 * The Executes they closed belong to the next Sync's batch. */
static void copy_drop_syncs(struct pgw_session *s)
{
    struct ps_queue *q = s->ps_queue;
    uint32_t kept = 0, carry = 0;
    for (uint32_t i = 0; i < q->len; i++) {
        struct qent *x = &q->e[(q->head + i) % q->cap];
        if (i > 0 && x->type == PGW_FE_SYNC && x->copy_ends == q->win_ends) {
            stmt_unref(reg_of(s), x->stmt);
            free(x->cname);
            q->syncs--;
            q->syncs_read++;
            carry += x->execs;
            continue;
        }
        if (carry && (x->type == PGW_FE_SYNC || x->type == PGW_FE_QUERY ||
                      x->type == PGW_FE_FUNCTION_CALL)) {
            x->execs += carry;
            carry = 0;
        }
        if (kept != i)
            q->e[(q->head + kept) % q->cap] = *x;
        kept++;
    }
    q->len = kept;
    q->pending_execs -= carry;
    q->batch_execs += carry;
}

/* The server's CopyInResponse (or CopyBothResponse) to the request at the
 * queue's head (a Query, or an Execute: the replies before it are in).
 * The COPY reads what the client sent after that request -- after the
 * CopyDone of the COPY before it, for a Query's second one -- as its own:
 * a Sync there is read and ignored, with no ReadyForQuery, if the COPY
 * reads that far.  It may fail first, on a row before it, or before it
 * reads anything at all: PostgreSQL sends the CopyInResponse, then runs
 * the BEFORE STATEMENT triggers (and COPY FREEZE's checks), and an error
 * there leaves even a Sync sent right after the Execute unread, and so
 * answered.  Every such Sync stays due until the COPY's CommandComplete
 * tells (copy_done), or after its error the replies (copy_failed):
 * counted as read too soon, the server went back to the pool with their
 * ReadyForQuery and the replies after them still to come. */
static void copy_started(struct pgw_session *s, bool copy_in)
{
    struct ps_queue *q = s->ps_queue;
    struct qent *h = q_head(s);
    if (!h || (h->type != PGW_FE_QUERY && h->type != PGW_FE_EXECUTE))
        return;
    uint32_t k = h->copies++;
    q->win_ends = h->copy_ends + k;
    q->copy_run = true;
    q->copy_in = copy_in;
    /* What the client sent before its CopyDone or CopyFail, past the Syncs
     * (which the COPY ignores) and the messages pgwharf adds: the first is
     * what the COPY reads and fails on, after the data before it. */
    for (uint32_t i = 1; copy_in && copy_reads_one_type(s) && i < q->len; i++) {
        const struct qent *x = &q->e[(q->head + i) % q->cap];
        if (x->copy_ends != q->win_ends)
            break;
        if (x->type == PGW_FE_SYNC)
            continue;
        if (x->kind != Q_SWALLOW && !x->learn) {
            /* (The Execute raising a duplicate Parse's 42P05 is that Parse.) */
            q->copy_bad = x->dup ? PGW_FE_PARSE : x->type;   /* pgw_ps_emit, after this reply */
            break;
        }
    }
}

/* The COPY under way ended well (its CommandComplete): it read every Sync
 * sent up to its CopyDone, after data too, and answered none.  It read
 * the rest too: a Parse, Close or Describe among them that pgwharf
 * answers itself never reached the server, where PostgreSQL fails there
 * (copy_refused, in place of that CommandComplete: true). */
static bool copy_done(struct pgw_session *s)
{
    struct ps_queue *q = s->ps_queue;
    for (uint32_t i = 1; q->copy_in && copy_reads_one_type(s) && i < q->len; i++) {
        const struct qent *x = &q->e[(q->head + i) % q->cap];
        if (x->copy_ends != q->win_ends)
            break;
        if (x->kind == Q_FAKE) {
            q->copy_bad = x->type;
            break;
        }
    }
    copy_drop_syncs(s);
    q->copy_run = false;
    return q->copy_bad != 0;
}

/* The Sync at the head got no ReadyForQuery (a COPY read it): gone, told
 * to the relay as one a COPY read (pgw_ps_copy_syncs_read); the Executes
 * it closed belong to the next request's. */
static void head_sync_read(struct pgw_session *s)
{
    struct ps_queue *q = s->ps_queue;
    uint32_t carry = q_head(s)->execs;
    q_pop(s);
    q->syncs_read++;
    for (uint32_t i = 0; carry && i < q->len; i++) {
        struct qent *x = &q->e[(q->head + i) % q->cap];
        if (x->type == PGW_FE_SYNC || x->type == PGW_FE_QUERY ||
            x->type == PGW_FE_FUNCTION_CALL) {
            x->execs += carry;
            q->pending_execs += carry;
            return;
        }
    }
    q->batch_execs += carry;
}

/* The failed COPY's ErrorResponse (msg, total: NULL when too large to
 * hold): the Syncs of its window, before its data or among it, may have
 * been read by it, ignored, or after its failure, answered.  Which, the
 * error does not tell (a row's or a trigger's before it read anything):
 * the replies after it do (maybe_resolve).  But the CopyFail's own error
 * (57014 raised in CopyGetData) says the COPY read up to that CopyFail,
 * every Sync of its window too, as a CopyDone's CommandComplete does:
 * left maybe, they kept what was sent behind them from waiting for the
 * transaction it runs in (tx_pending: a Bind's 08P01 came out as 25P02). */
static void copy_failed(struct pgw_session *s, const uint8_t *msg, uint32_t total)
{
    struct ps_queue *q = s->ps_queue;
    if (msg && total > PGW_MSG_HDR &&
        pgw_track_copy_fail_error(msg + PGW_MSG_HDR, total - PGW_MSG_HDR)) {
        copy_drop_syncs(s);
        return;
    }
    for (uint32_t i = 1; i < q->len; i++) {
        struct qent *x = &q->e[(q->head + i) % q->cap];
        if (x->copy_ends > q->win_ends)
            break;
        if (x->copy_ends == q->win_ends && x->type == PGW_FE_SYNC && !x->maybe) {
            x->maybe = true;
            q->maybe++;
        }
    }
    /* By Execute: the server now skips to the next Sync it reads. */
    if (q->maybe > 0) {
        q->maybe_ext = q_head(s)->type == PGW_FE_EXECUTE;
        q->copy_zs = 0;
    }
}

/* A server message of `type` while maybe Syncs are at the head: those the
 * COPY read come first, then those answered, each with a ReadyForQuery.
 * So a ReadyForQuery there answers one (q_pop'd by the caller), and any
 * reply of a later request (not a notice, ParameterStatus or
 * notification, which come at any time) tells that the maybe Syncs left
 * were read.  A ReadyForQuery taken for a maybe Sync may have been a later
 * lone Sync's (the same bytes to the client): such a Sync at the head when
 * a later request's reply comes was answered by it (credit).  Not when
 * the type is unknown (0). */
static void maybe_resolve(struct pgw_session *s, char type)
{
    struct ps_queue *q = s->ps_queue;
    if (!q || (q->maybe == 0 && q->credit == 0) || type == PGW_BE_NOTICE ||
        type == PGW_BE_PARAM_STATUS || type == PGW_BE_NOTIFY)
        return;
    const struct qent *h;
    while ((h = q_head(s))) {
        if (h->maybe && type == PGW_BE_READY) {
            q->credit++;
            return;
        }
        if (h->maybe || (h->type == PGW_FE_SYNC && q->credit > 0 && type != PGW_BE_READY)) {
            if (!h->maybe)
                q->credit--;
            head_sync_read(s);
            continue;
        }
        break;
    }
    if (type != PGW_BE_READY)
        q->credit = 0;
}

bool pgw_ps_resolve(struct pgw_session *s, char type)
{
    /* (A ReadyForQuery pops no Sync here: its own comes out after it.) */
    if (type == PGW_BE_READY || s->sskip)
        return false;
    maybe_resolve(s, type);
    const struct qent *h = q_head(s);
    if (!h || h->kind != Q_FAKE)
        return false;
    pgw_ps_emit(s);
    return true;
}

/* Is every reply due one to a Sync (or one pgwharf makes, `fakes`)?
 * Then the ReadyForQuerys before a probe's are alike: any one of them is
 * the one dropped for it. */
static bool only_syncs(const struct pgw_session *s, bool fakes)
{
    const struct ps_queue *q = s->ps_queue;
    for (uint32_t i = 0; i < q->len; i++) {
        const struct qent *x = &q->e[(q->head + i) % q->cap];
        if (!(x->type == PGW_FE_SYNC && x->kind == Q_PASS) && !(fakes && x->kind == Q_FAKE))
            return false;
    }
    return true;
}

/* The probe (ps_queue.probe_z): a Sync, a Close of PGW_0 (no statement
 * has id 0: its Close is no error, and starts no transaction), a Flush.
 * Inserted at `at` in b, its Close queued; false when out of memory. */
static bool probe_send(struct pgw_session *s, struct pgw_iobuf *b, uint32_t at)
{
    static const uint8_t m[] = { 'S', 0, 0, 0, 4,
                                 'C', 0, 0, 0, 11, 'S', 'P', 'G', 'W', '_', '0', 0,
                                 'H', 0, 0, 0, 4 };
    if (!q_push(s, Q_SWALLOW, PGW_FE_CLOSE, NULL))
        return false;
    pgw_iobuf_insert(b, at, m, sizeof(m));
    q_tail(s)->probe = true;
    s->ps_queue->probe = PROBE_OUT;
    s->ps_queue->probe_z = true;
    return true;
}

/* The server was skipping to a Sync when the probe's came: a Bind of
 * PGW_0 (which no server has) makes it skip again, as it would have the
 * messages the client sent since -- its error dropped. */
static bool probe_skip_send(struct pgw_session *s, struct pgw_iobuf *b)
{
    static const uint8_t m[] = { 'B', 0, 0, 0, 17, 0, 'P', 'G', 'W', '_', '0', 0,
                                 0, 0, 0, 0, 0, 0,
                                 'H', 0, 0, 0, 4 };
    if (!q_push(s, Q_SWALLOW, PGW_FE_BIND, NULL))
        return false;
    insert_here(b, m, sizeof(m));
    q_tail(s)->probe = true;
    s->ps_queue->probe = PROBE_ERR_OUT;
    return true;
}

/* A message of the client's (type, at b->parsed) after its CopyDone or
 * CopyFail and before its next Sync.  PostgreSQL runs it, or skips it
 * when a COPY by Execute failed after reading every Sync the client sent
 * before that CopyDone (and ignoring them).  Which, the replies tell only
 * after it: it waits (PGW_PS_WAIT) until the COPY's end is in, and after
 * its error with Syncs it may have read (maybe) and no ReadyForQuery
 * since, for a probe (probe_send) and, if the server was skipping, the
 * error that makes it skip again. */
static enum pgw_ps_action gap_hold(struct pgw_session *s, struct pgw_iobuf *b, char type)
{
    struct ps_queue *q = s->ps_queue;
    if (!q || !q->gap)
        return PGW_PS_FORWARD;
    if (type == PGW_FE_SYNC) {
        q->gap = false;
        return PGW_PS_FORWARD;
    }
    for (uint32_t i = 0; i < q->len; i++) {
        const struct qent *x = &q->e[(q->head + i) % q->cap];
        if (x->type != PGW_FE_EXECUTE || x->copy_ends >= q->copy_ends)
            continue;
        /* A COPY it may start is not over.  Its CommandComplete waits in
         * the server for a flush: a Flush of pgwharf's asks for it. */
        if (!q->gap_flushed) {
            static const uint8_t flush[] = { 'H', 0, 0, 0, 4 };
            if (!need_room(s, b, sizeof(flush)))
                return PGW_PS_NEED_ROOM;
            insert_here(b, flush, sizeof(flush));
            q->gap_flushed = true;
        }
        return PGW_PS_WAIT;
    }
    if (q->probe == PROBE_OUT || q->probe == PROBE_ERR_OUT)
        return PGW_PS_WAIT;
    if (q->probe == PROBE_SKIP) {
        if (!need_room(s, b, 23))
            return PGW_PS_NEED_ROOM;
        if (!probe_skip_send(s, b))
            goto oom;
        return PGW_PS_WAIT;
    }
    if (q->maybe > 0 && q->maybe_ext && q->copy_zs == 0) {
        /* A request after them: its replies tell (maybe_resolve). */
        if (!only_syncs(s, true))
            return PGW_PS_WAIT;
        if (!need_room(s, b, 22))
            return PGW_PS_NEED_ROOM;
        if (!probe_send(s, b, b->parsed))   /* (parsed moves past it) */
            goto oom;
        return PGW_PS_WAIT;
    }
    return PGW_PS_FORWARD;
oom:
    pgw_session_close(s, "53200", "out of memory");
    return PGW_PS_FAILED;
}

/* PGW_PS_BACKLOG_MAX replies expected: the message waits (PGW_PS_WAIT),
 * scanned again as answers come.  Some may be replies pgwharf makes itself
 * (a Close of a statement no server has, a Parse it answers), queued
 * behind the server's replies to requests sent before them, which
 * PostgreSQL holds until a Sync or a Flush: the client's is behind this
 * message, so a Flush of pgwharf's asks for them (else the client waited
 * for ever: one Bind and Execute, then 8000 such Closes and a Sync). */
static enum pgw_ps_action backlog_hold(struct pgw_session *s, struct pgw_iobuf *b, char type)
{
    struct ps_queue *q = s->ps_queue;
    if (!q)
        return PGW_PS_FORWARD;
    if (q->len < PGW_PS_BACKLOG_MAX) {
        q->backlog_flushed = false;
        return PGW_PS_FORWARD;
    }
    if (type == PGW_FE_SYNC && q->copy_run && q->copy_in && q->copy_ends == q->win_ends) {
        /* A COPY FROM STDIN under way reads it and ignores it: no answer
         * comes until the client's data, behind it, is sent -- held, the
         * client and its server waited for ever (a client that left
         * there too).  The session ends, its server with it; the answers
         * the client was given before go first, then the FATAL (closed at
         * once, a client not reading then lost both). */
        char m[120];
        snprintf(m, sizeof(m), "too many Syncs sent during COPY FROM STDIN (%d at most with "
                 "max_prepared_statements on)", PGW_PS_BACKLOG_MAX);
        pgw_relay_close_owed(s, "54000", m);
        return PGW_PS_FAILED;
    }
    if (!q->backlog_flushed) {
        static const uint8_t flush[] = { PGW_FE_FLUSH, 0, 0, 0, 4 };
        if (!need_room(s, b, sizeof(flush)))
            return PGW_PS_NEED_ROOM;
        insert_here(b, flush, sizeof(flush));
        q->backlog_flushed = true;
    }
    return PGW_PS_WAIT;
}

bool pgw_ps_probe_idle(struct pgw_session *s)
{
    struct ps_queue *q = s->ps_queue;
    if (!q || q->probe != PROBE_NONE || q->copy_run || q->len == 0 ||
        (q->maybe == 0 && q->credit == 0))
        return false;
    /* Replies pgwharf makes itself may wait behind those Syncs (a Close
     * or a Parse it answers, sent after them): their messages went
     * nowhere (nor counted in the tracker's fe_open), so a Sync after them
     * ends nothing of the client's.  (Else they waited for ever: nothing
     * more came from the server to show the Syncs were read.) */
    if (!only_syncs(s, true))
        return false;
    /* The client's last Sync is one sent after the error or the COPY's
     * end: the server skips nothing after it. */
    const struct qent *last = NULL;
    for (uint32_t i = q->len; i-- > 0;) {
        const struct qent *x = &q->e[(q->head + i) % q->cap];
        if (x->type == PGW_FE_SYNC) {
            last = x;
            break;
        }
    }
    if (!last || last->maybe)
        return false;
    if (!s->cbuf && !(s->cbuf = pgw_iobuf_get(s->px)))
        return false;
    if (!pgw_iobuf_reserve(s->px, &s->cbuf, s->cbuf->len - s->cbuf->sent + 22))
        return false;
    return probe_send(s, s->cbuf, s->cbuf->parsed);
}

bool pgw_ps_probe_ended(struct pgw_session *s)
{
    struct ps_queue *q = s->ps_queue;
    if (!q || !q->probe_ended)
        return false;
    q->probe_ended = false;
    return true;
}

int pgw_ps_copy_syncs_read(struct pgw_session *s)
{
    struct ps_queue *q = s->ps_queue;
    int n = q ? q->syncs_read : 0;
    if (q)
        q->syncs_read = 0;
    return n;
}

/* A simple Query that is DEALLOCATE [PREPARE] ALL or DISCARD ALL alone,
 * whole in the buffer (a longer text is not one). */
static bool query_drops_all(const struct pgw_iobuf *b, uint32_t total)
{
    const uint8_t *m = b->data + b->parsed;
    return total > PGW_MSG_HDR && total <= PGW_MSG_HDR + 64 && b->len - b->parsed >= total &&
           m[total - 1] == '\0' &&
           memchr(m + PGW_MSG_HDR, 0, total - PGW_MSG_HDR) == m + total - 1 &&
           drops_all((const char *)m + PGW_MSG_HDR);
}

enum pgw_ps_action pgw_ps_frontend(struct pgw_session *s, struct pgw_iobuf *b, char type,
                                   uint32_t *total)
{
    /* The server skips it and answers nothing, as PostgreSQL would: sent
     * as it is, no name taken or closed, no Parse injected (the Sync ends
     * the skipping: pgw_track_frontend). */
    if (s->track.skip_sync && type != PGW_FE_SYNC)
        return PGW_PS_FORWARD;
    /* A COPY FROM STDIN under way, which the client has not ended, reads
     * it next, after the data before it (copy_refused): pgwharf must not
     * answer it itself (a Close), or the COPY went on and committed its
     * rows, refused only at its end. */
    if (type != PGW_FE_SYNC && s->ps_queue && s->ps_queue->copy_run && s->ps_queue->copy_in &&
        s->ps_queue->copy_ends == s->ps_queue->win_ends && copy_reads_one_type(s)) {
        copy_refused(s, type);
        return PGW_PS_FAILED;
    }
    enum pgw_ps_action held = backlog_hold(s, b, type);
    if (held != PGW_PS_FORWARD)
        return held;
    held = gap_hold(s, b, type);
    if (held != PGW_PS_FORWARD)
        return held;
    switch (type) {
    case PGW_FE_PARSE:
        return on_parse(s, b, total);
    case PGW_FE_BIND:
    case PGW_FE_DESCRIBE:
    case PGW_FE_CLOSE:
        return on_named(s, b, type, total);
    default:
        if (!q_push(s, Q_PASS, type, NULL)) {
            pgw_session_close(s, "53200", "out of memory");
            return PGW_PS_FAILED;
        }
        if (type == PGW_FE_QUERY && query_drops_all(b, *total)) {
            drops_all_sent(s, false);
            q_tail(s)->drops = true;
            s->ps_queue->drops++;
        }
        if (type == PGW_FE_QUERY && s->ps_queue->qd_cc) {
            /* query_dealloc rewrote it. */
            struct ps_queue *q = s->ps_queue;
            struct qent *x = q_tail(s);
            x->cname = q->qd_cname;
            x->stmt = q->qd_stmt;
            x->dealloc = true;
            x->dealloc_cc = q->qd_cc;
            q->qdeallocs++;
            q->qd_cname = NULL;
            q->qd_stmt = NULL;
            q->qd_cc = 0;
            if (q->qd_pos_delta && !pos_push(q, x)) {
                pgw_session_close(s, "53200", "out of memory");
                return PGW_PS_FAILED;
            }
        }
        return PGW_PS_FORWARD;
    }
}

/* ---- backend side ---- */

bool pgw_ps_backend_wants_whole(struct pgw_session *s, char type)
{
    maybe_resolve(s, type);
    if (type == PGW_BE_ERROR || type == PGW_BE_PARSE_COMPLETE ||
        type == PGW_BE_BIND_COMPLETE || type == PGW_BE_CLOSE_COMPLETE ||
        type == PGW_BE_COMMAND_COMPLETE)           /* a few bytes: its tag */
        return true;
    /* The replies to a Describe pgwharf sent (inject_describe, check_describe). */
    const struct qent *h;
    return (type == 't' || type == PGW_BE_ROW_DESC || type == 'n') && (h = q_head(s)) &&
           (h->learn || h->check);
}

static bool completes(char fe, char be)
{
    switch (fe) {
    case PGW_FE_PARSE: return be == PGW_BE_PARSE_COMPLETE;
    case PGW_FE_BIND: return be == PGW_BE_BIND_COMPLETE;
    case PGW_FE_CLOSE: return be == PGW_BE_CLOSE_COMPLETE;
    case PGW_FE_DESCRIBE: return be == PGW_BE_ROW_DESC || be == 'n';
    case PGW_FE_EXECUTE:
        return be == PGW_BE_COMMAND_COMPLETE || be == PGW_BE_EMPTY_QUERY || be == 's';
    case PGW_FE_SYNC:
    case PGW_FE_QUERY:
    case PGW_FE_FUNCTION_CALL:
        return be == PGW_BE_READY;
    default:
        return false;
    }
}

/* A Parse that never happened on the server: forget it there, and forget
 * the client's name for it (PostgreSQL has no such statement either, so the
 * client may Parse that name again). */
static void undo_parse(struct pgw_session *s, const struct qent *x)
{
    if (x->dealloc)
        return;                          /* undo_close puts its name back */
    if (x->check)
        return;                          /* (its name is its Parse's) */
    if (x->cname && s->ps_client) {
        struct ps_client_name *cn = client_find(s, x->cname);
        if (cn && cn->stmt == x->stmt)
            client_remove(s, cn);
        /* The drop ahead of it in the batch did not run either: the
         * name's statement stands again. */
        if (x->prev && !client_find(s, x->cname)) {
            x->prev->refs++;
            if (!client_add(s, x->cname, names_shown(x->cname), x->prev))
                stmt_unref(reg_of(s), x->prev);
        }
    }
    /* A ParseComplete of pgwharf's own, or a Parse refused in a failed
     * transaction, left the server's statement alone. */
    if (x->type != PGW_FE_PARSE || x->kind == Q_FAKE || x->had || !x->stmt || !s->server ||
        !s->server->user_state)
        return;
    struct ps_server *ss = s->server->user_state;
    struct ps_server_stmt *e = server_find(ss, x->stmt);
    if (e)
        server_drop(ss, e);
}

/* A client's Close that the server skipped (an earlier error in the
 * batch): PostgreSQL keeps the statement, so the client's name stands
 * again -- over a Parse of that name further on, which is skipped too. */
static void undo_close(struct pgw_session *s, const struct qent *x)
{
    if (!((x->type == PGW_FE_CLOSE && x->kind == Q_FAKE) || x->dealloc) || !x->cname ||
        !x->stmt)
        return;
    struct ps_client_name *cn = client_find(s, x->cname);
    x->stmt->refs++;                     /* the name's reference */
    if (cn) {
        stmt_unref(reg_of(s), cn->stmt);
        cn->stmt = x->stmt;
    } else if (!client_add(s, x->cname, names_shown(x->cname), x->stmt)) {
        stmt_unref(reg_of(s), x->stmt);  /* out of memory: the name stays closed */
    }
}

/* The server said a statement pgwharf prepared there does not exist
 * (26000 at a Bind or Describe of it): something pgwharf did not see
 * dropped it -- DEALLOCATE ALL run by a function, a DEALLOCATE "PGW_7"
 * typed by hand.  Which others went too cannot be told, so none is taken
 * for prepared any more: each is closed again (a Close of one that is gone
 * is no error) and prepared afresh at its next use, rather than fail with
 * 26000 on this server for good. */
static void server_lost(struct ps_server *ss)
{
    while (!pgw_list_empty(&ss->lru)) {
        struct ps_server_stmt *e =
            pgw_container_of(pgw_list_first(&ss->lru), struct ps_server_stmt, lru);
        reclose_add(ss, e->stmt->id);
        server_drop(ss, e);
    }
}

/* An error a prepared statement's text gets when PostgreSQL reads it
 * again at a Bind after its tables changed (not one of running it, such
 * as 42501, which the executor's start at a Bind may raise). */
static bool reanalysis_error(const char *sqlstate)
{
    static const char *const codes[] = { "42883", "42804", "42703", "42P01", "42846", "42725",
                                         "42P18", "42809" };
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
        if (strcmp(sqlstate, codes[i]) == 0)
            return true;
    return false;
}

/* Could a Parse's error be of its text (a table dropped, a type gone), for
 * parsed_ok?  Not a failed transaction's 25P02, nor one of the session or
 * the server: a connection's (08), a rollback (40: a deadlock), resources
 * (53), a lock_timeout (55P03), a cancel or statement_timeout (57014), a
 * shutdown (57P01), a system error (58).  Those say nothing of the text,
 * and a statement every server has gets no Parse that would set it again
 * (its Parses are answered by pgwharf, Q_FAKE): its prepares would wait
 * for a server for good. */
static bool text_error(const char *sqlstate)
{
    static const char *const not_text[] = { "08", "40", "53", "55", "57", "58" };
    if (strcmp(sqlstate, "25P02") == 0)
        return false;
    for (size_t i = 0; i < sizeof(not_text) / sizeof(not_text[0]); i++)
        if (strncmp(sqlstate, not_text[i], 2) == 0)
            return false;
    return true;
}

static void on_error(struct pgw_session *s, const uint8_t *msg, uint32_t total)
{
    struct qent *h = q_head(s);
    if (!h || h->type == PGW_FE_QUERY || h->type == PGW_FE_FUNCTION_CALL ||
        h->type == PGW_FE_SYNC)
        return;
    struct pgw_wire_err_fields f;
    if (h->type == PGW_FE_PARSE && h->stmt && h->kind != Q_FAKE && !h->dealloc &&
        !(msg && pgw_wire_parse_error(msg + 5, total - 5, &f) == 0 && !text_error(f.sqlstate)))
        h->stmt->parsed_ok = false;      /* (a table dropped?) servers say, not pgwharf */
    if (msg && h->stmt && s->server && s->server->user_state &&
        pgw_wire_parse_error(msg + 5, total - 5, &f) == 0 && strcmp(f.sqlstate, "0A000") == 0 &&
        strcmp(f.routine, "RevalidateCachedQuery") == 0) {
        /* "cached plan must not change result type", in any lc_messages:
         * the routine is never translated (PostgreSQL 9.6 and later raise
         * no other 0A000 there). */
        struct ps_server_stmt *e = server_find(s->server->user_state, h->stmt);
        if (e)
            e->stale = true;
        h->stmt->retired = true;
    }
    if ((h->type == PGW_FE_BIND || h->type == PGW_FE_DESCRIBE) && h->stmt && msg && s->server &&
        s->server->user_state && pgw_wire_parse_error(msg + 5, total - 5, &f) == 0 &&
        strcmp(f.sqlstate, "26000") == 0)
        server_lost(s->server->user_state);
    if (h->type == PGW_FE_PARSE && h->pinned && h->stmt && h->stmt->pinned && msg &&
        pgw_wire_parse_error(msg + 5, total - 5, &f) == 0 &&
        (strncmp(f.sqlstate, "42", 2) == 0 ||
         (strcmp(f.sqlstate, "XX000") == 0 && strstr(f.message, "cache lookup failed for type")))) {
        /* Its tables changed so that the types first learnt no longer
         * fit (an integer column made text: no operator, 42883): from now
         * on servers read it afresh, as a client's new Parse would be on
         * PostgreSQL, rather than fail it on every server until the
         * statement is gone.  A type dropped (and made again: a new OID)
         * since is XX000 "cache lookup failed for type" there, which the
         * Parse of a client would never meet either.  Not for other
         * errors (a failed
         * transaction's 25P02, a lock_timeout while the ALTER holds the
         * table): the types still hold. */
        free(h->stmt->pinned);
        h->stmt->pinned = NULL;
    }
    if (h->type == PGW_FE_BIND && h->stmt && msg && s->server && s->server->user_state &&
        pgw_wire_parse_error(msg + 5, total - 5, &f) == 0 &&
        (reanalysis_error(f.sqlstate) ||
         (strcmp(f.sqlstate, "XX000") == 0 && strstr(f.message, "cache lookup failed for type")))) {
        /* The same on a server that has it: PostgreSQL reads a prepared
         * statement again at its Bind after its tables changed, with the
         * parameter types it was Parsed with (42883 for an integer column
         * made text) -- for ever, where a client's new Parse would read
         * them afresh.  It is closed and prepared again there at its next
         * use, unpinned. */
        struct ps_server_stmt *e = server_find(s->server->user_state, h->stmt);
        if (e)
            e->stale = true;
        free(h->stmt->pinned);
        h->stmt->pinned = NULL;
    }
    /* The server skips everything up to the next Sync -- a Query or
     * FunctionCall in between too, which gets no ReadyForQuery then: the
     * relay must not wait for one (the server would stay with the client
     * until it left).  The client's names are put back newest first, as
     * they were before each message: a Parse and then a Close of one name,
     * both skipped, leave no name. */
    struct ps_queue *q = s->ps_queue;
    uint32_t k = 0;
    int requests = 0;
    for (char t; k < q->len && (t = q->e[(q->head + k) % q->cap].type) != PGW_FE_SYNC; k++)
        requests += t == PGW_FE_QUERY || t == PGW_FE_FUNCTION_CALL;
    for (uint32_t i = k; i-- > 0;) {
        const struct qent *x = &q->e[(q->head + i) % q->cap];
        undo_parse(s, x);
        undo_close(s, x);
    }
    while (k-- > 0) {
        h = q_head(s);
        if (h->close_id && s->server && s->server->user_state)
            reclose_add(s->server->user_state, h->close_id);
        q_pop(s);
    }
    /* No Sync queued: it is still to come, and so is what the client
     * sends before it (skipped too). */
    pgw_track_ext_error(&s->track, requests, !q_head(s));
}

void pgw_ps_abandon(struct pgw_session *s, struct pgw_server *srv)
{
    struct ps_server *ss = srv->user_state;
    struct ps_queue *q = s->ps_queue;
    if (!ss || !q)
        return;
    for (uint32_t i = 0; i < q->len; i++) {
        const struct qent *x = &q->e[(q->head + i) % q->cap];
        if (x->type == PGW_FE_PARSE && x->stmt && x->kind != Q_FAKE && !x->dealloc) {
            struct ps_server_stmt *e = server_find(ss, x->stmt);
            if (e)
                server_drop(ss, e);
            reclose_add(ss, x->stmt->id);
        }
        if (x->close_id)
            reclose_add(ss, x->close_id);
    }
}

/* A Parse sent after the queue head, not yet answered: st under the
 * client's name cname (NULL: any name), prepared on the server (true) or
 * answered by pgwharf (false). */
static bool parse_queued(const struct pgw_session *s, const struct ps_stmt *st, const char *cname,
                         bool on_server)
{
    const struct ps_queue *q = s->ps_queue;
    for (uint32_t i = 0; q && i < q->len; i++) {
        const struct qent *x = &q->e[(q->head + i) % q->cap];
        if (x->type == PGW_FE_PARSE && x->stmt == st && (x->kind != Q_FAKE) == on_server &&
            !x->dealloc &&
            (!cname || (x->cname && strcmp(x->cname, cname) == 0)))
            return true;
    }
    return false;
}

/* The server ran DISCARD ALL or DEALLOCATE ALL for s (its CommandComplete
 * came, so it did not fail): it has no prepared statements left, and the
 * client none of its names -- but for Parses sent after it, which the
 * server runs later. */
/* Was the i-th entry's client name made again by a Parse queued ahead of
 * it (behind the DEALLOCATE ALL)?  By name, not statement: that Parse may
 * have given the name another statement (another text, or the same read
 * in other settings) than the one the entry holds. */
static bool parsed_ahead(const struct ps_queue *q, uint32_t i, const struct qent *c)
{
    for (uint32_t j = 0; j < i; j++) {
        const struct qent *x = &q->e[(q->head + j) % q->cap];
        if (x->type == PGW_FE_PARSE && !x->dealloc && x->cname &&
            strcmp(x->cname, c->cname) == 0)
            return true;
    }
    return false;
}

static void on_discard(struct pgw_session *s)
{
    /* It ran: the names Parses behind it took are theirs for good.  A
     * Close (or SQL DEALLOCATE) behind it of a name it dropped has no
     * statement to bring back if the server skips it (undo_close): the
     * name is gone either way. */
    struct ps_queue *q = s->ps_queue;
    for (uint32_t i = 0; q && i < q->len; i++) {
        struct qent *x = &q->e[(q->head + i) % q->cap];
        stmt_unref(reg_of(s), x->prev);
        x->prev = NULL;
        if (((x->type == PGW_FE_CLOSE && x->kind == Q_FAKE) || x->dealloc) && x->cname &&
            !parsed_ahead(q, i, x)) {
            free(x->cname);
            x->cname = NULL;
        }
    }
    struct ps_server *ss = s->server ? s->server->user_state : NULL;
    if (ss) {
        struct pgw_list *n = ss->lru.next, *next;
        for (; n != &ss->lru; n = next) {
            next = n->next;
            struct ps_server_stmt *e = pgw_container_of(n, struct ps_server_stmt, lru);
            if (!parse_queued(s, e->stmt, NULL, true))
                server_drop(ss, e);
        }
    }
    struct ps_client *c = s->ps_client;
    if (!c)
        return;
    HMAP_WALK(w, &c->map) {
        struct ps_client_name *e = pgw_container_of(w.node, struct ps_client_name, hnode);
        if (!parse_queued(s, e->stmt, e->name, true) && !parse_queued(s, e->stmt, e->name, false))
            client_remove(s, e);
    }
}


/* Is sql the statement cmd (its words, one space apart) alone, in any
 * case, with any blanks and comments between and around its words, and
 * semicolons after? */
static bool is_cmd(const char *sql, const char *cmd)
{
    const char *p = skip_blank(sql);
    while (*cmd) {
        size_t n = strcspn(cmd, " ");
        if (strncasecmp(p, cmd, n) != 0)
            return false;
        p += n;
        cmd += n;
        if (*cmd == ' ') {
            cmd++;
            const char *q = skip_blank(p);
            if (q == p)
                return false;            /* DISCARDALL */
            p = q;
        }
    }
    for (p = skip_blank(p); *p == ';'; p = skip_blank(p + 1))
        ;
    return *p == '\0';
}

void pgw_ps_server_reset(struct pgw_server *srv, const char *reset_query)
{
    struct ps_server *ss = srv->user_state;
    if (!ss || !reset_query || !*reset_query)
        return;
    if (is_cmd(reset_query, "DISCARD ALL") || is_cmd(reset_query, "DEALLOCATE ALL")) {
        server_clear(ss);           /* it fails only by closing the server */
        ss->nreclose = 0;
        return;
    }
    /* Whatever else it does, the statements may be gone or not: closed
     * again before the server prepares anything more. */
    server_lost(ss);
}

/* The error's body rewritten into w: each "PGW_<n>" (quoted, as
 * PostgreSQL quotes names) becomes "cname"; without_context drops the
 * CONTEXT (W) field.  False when there is nothing to change. */
static bool error_rewrite(const uint8_t *msg, uint32_t total, const char *pgw_name,
                          const char *cname, bool without_context, struct pgw_wbuf *w)
{
    char quoted[32];
    int ql = snprintf(quoted, sizeof(quoted), "\"%s\"", pgw_name);
    bool changed = false;
    size_t at = pgw_wbuf_msg_begin(w, PGW_BE_ERROR);
    uint32_t i = PGW_MSG_HDR;
    while (i < total && msg[i] != 0) {
        const uint8_t *end = memchr(msg + i + 1, 0, total - i - 1);
        if (!end)
            return false;             /* malformed: passed on untouched */
        uint32_t flen = (uint32_t)(end - msg) - i;          /* code and text */
        if (without_context && msg[i] == 'W') {
            changed = true;
            i += flen + 1;
            continue;
        }
        const uint8_t *f = msg + i, *fend = f + flen;
        const uint8_t *hit;
        while (ql > 0 && cname && (hit = memmem(f, (size_t)(fend - f), quoted, (size_t)ql))) {
            pgw_wbuf_append(w, f, (size_t)(hit - f));
            pgw_wbuf_put_u8(w, '"');
            pgw_wbuf_append(w, cname, strlen(cname));
            pgw_wbuf_put_u8(w, '"');
            f = hit + ql;
            changed = true;
        }
        pgw_wbuf_append(w, f, (size_t)(fend - f));
        pgw_wbuf_put_u8(w, 0);
        i += flen + 1;
    }
    pgw_wbuf_put_u8(w, 0);
    pgw_wbuf_msg_end(w, at);
    return changed && !w->failed;
}

/* Does the error at msg (total bytes, header included) have a field of
 * this code? */
static bool error_has_field(const uint8_t *msg, uint32_t total, uint8_t code)
{
    uint32_t i = PGW_MSG_HDR;
    while (i < total && msg[i] != 0) {
        if (msg[i] == code)
            return true;
        const uint8_t *end = memchr(msg + i + 1, 0, total - i - 1);
        if (!end)
            return false;
        i = (uint32_t)(end - msg) + 1;
    }
    return false;
}

/* The error at sbuf->parsed (*total bytes) replaced by m. */
static bool error_replace(struct pgw_session *s, uint32_t *total, const struct pgw_wbuf *m)
{
    struct pgw_iobuf *b = s->sbuf;
    uint32_t n = (uint32_t)m->len;
    if (m->failed ||
        (n > *total && !pgw_iobuf_reserve(s->px, &s->sbuf, b->len - b->sent + n - *total))) {
        pgw_session_close(s, "53200", "out of memory for a reply to the client");
        return false;
    }
    replace_here(s->sbuf, *total, m);
    *total = n;
    return true;
}

/* The 25P02 refusing a Parse sent for a Bind in a failed transaction
 * becomes the Bind's 08P01, as PostgreSQL checks its parameters first
 * (failed_tx_answer). */
static bool bind_error(struct pgw_session *s, const struct qent *h, uint32_t *total)
{
    char text[300];
    if (h->bind_formats > 1 && h->bind_formats != h->bind_params)
        snprintf(text, sizeof(text), "bind message has %u parameter formats but %u parameters",
                 h->bind_formats, h->bind_params);
    else
        snprintf(text, sizeof(text),
                 "bind message supplies %u parameters, but prepared statement \"%s\" requires %u",
                 h->bind_params, h->bname, h->stmt->nparams);
    struct pgw_wbuf m;
    pgw_wbuf_init(&m);
    size_t at = pgw_wbuf_msg_begin(&m, PGW_BE_ERROR);
    static const char *const fields[] = { "SERROR", "VERROR", "C08P01" };
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
        pgw_wbuf_put_str(&m, fields[i]);
    pgw_wbuf_put_u8(&m, 'M');
    pgw_wbuf_put_str(&m, text);
    pgw_wbuf_put_str(&m, "Fpostgres.c");
    pgw_wbuf_put_str(&m, "Rexec_bind_message");
    pgw_wbuf_put_u8(&m, 0);
    pgw_wbuf_msg_end(&m, at);
    bool ok = error_replace(s, total, &m);
    pgw_wbuf_deinit(&m);
    return ok;
}

/* An error to a Query query_dealloc rewrote (h, its ps_queue.pos): its
 * Position (P) past the rewritten statement is moved back to where it is
 * in the client's text, as PostgreSQL reports it to a direct client (the
 * name pgwharf deallocates is longer than most a client gives).  False
 * when the session was closed. */
static bool dealloc_position(struct pgw_session *s, const struct qd_pos *h, uint32_t *total)
{
    const uint8_t *msg = s->sbuf->data + s->sbuf->parsed;
    uint32_t i = PGW_MSG_HDR;
    while (i < *total && msg[i] != 0) {
        const uint8_t *end = memchr(msg + i + 1, 0, *total - i - 1);
        if (!end)
            return true;                 /* malformed: passed on untouched */
        if (msg[i] == 'P') {
            char *e = NULL;
            unsigned long v = strtoul((const char *)msg + i + 1, &e, 10);
            if (e != (const char *)end || v < h->after || v > UINT32_MAX ||
                (long)v - h->delta < 1)
                return true;
            char num[16];
            snprintf(num, sizeof(num), "%ld", (long)v - h->delta);
            struct pgw_wbuf w;
            pgw_wbuf_init(&w);
            size_t at = pgw_wbuf_msg_begin(&w, PGW_BE_ERROR);
            pgw_wbuf_append(&w, msg + PGW_MSG_HDR, i + 1 - PGW_MSG_HDR);
            pgw_wbuf_append(&w, num, strlen(num));
            pgw_wbuf_append(&w, end, *total - (uint32_t)(end - msg));
            pgw_wbuf_msg_end(&w, at);
            bool ok = error_replace(s, total, &w);
            pgw_wbuf_deinit(&w);
            return ok;
        }
        i = (uint32_t)(end - msg) + 1;
    }
    return true;
}

/* The 26000 of the message failing in place of a Bind or Describe whose
 * statement's reading on this server is not the client's (shape_fail):
 * PostgreSQL's 0A000, field for field but the line, and for a Describe
 * the statement's ParameterDescription first, as PostgreSQL sends it. */
static bool shape_error(struct pgw_session *s, const struct qent *h, uint32_t *total)
{
    /* No ParameterDescription when none was learnt of the statement
     * (pdesc: learn_now skipped it, or its learning failed), where
     * PostgreSQL sends one: a driver reading the Describe's answer takes
     * the error first either way, and learning it here would cost one
     * more Describe ahead of every such failure. */
    const struct ps_stmt *pd = h->type == PGW_FE_DESCRIBE && h->ref ? h->ref : NULL;
    if (pd && pd->pdesc && !emit_bytes(s, pd->pdesc, pd->pdesc_len)) {
        pgw_session_close(s, "53200", "out of memory for a reply to the client");
        return false;
    }
    struct pgw_wbuf m;
    pgw_wbuf_init(&m);
    size_t at = pgw_wbuf_msg_begin(&m, PGW_BE_ERROR);
    static const char *const fields[] = { "SERROR", "VERROR", "C0A000",
                                          "Mcached plan must not change result type",
                                          "Fplancache.c", "RRevalidateCachedQuery" };
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
        pgw_wbuf_put_str(&m, fields[i]);
    pgw_wbuf_put_u8(&m, 0);
    pgw_wbuf_msg_end(&m, at);
    bool ok = error_replace(s, total, &m);
    pgw_wbuf_deinit(&m);
    return ok;
}

bool pgw_ps_backend_error(struct pgw_session *s, uint32_t *total)
{
    maybe_resolve(s, PGW_BE_ERROR);
    const struct qent *h = q_head(s);
    struct pgw_wire_err_fields f;
    if (h && h->pos &&
        !dealloc_position(s, &s->ps_queue->pos[s->ps_queue->pos_head], total))
        return false;
    if (h && h->shape_err &&
        pgw_wire_parse_error(s->sbuf->data + s->sbuf->parsed + PGW_MSG_HDR,
                             *total - PGW_MSG_HDR, &f) == 0 && strcmp(f.sqlstate, "26000") == 0)
        return shape_error(s, h, total);
    if (h && h->bind_refused &&
        pgw_wire_parse_error(s->sbuf->data + s->sbuf->parsed + PGW_MSG_HDR,
                             *total - PGW_MSG_HDR, &f) == 0 && strcmp(f.sqlstate, "25P02") == 0)
        return bind_error(s, h, total);
    bool own = h && h->type == PGW_FE_PARSE && h->close_id;     /* dup_error_own */
    if (!h || (h->kind != Q_PASS && !h->learn) ||
        !(h->dup || own || (h->stmt && (h->type == PGW_FE_BIND || h->type == PGW_FE_DESCRIBE))))
        return true;
    /* Most such errors (22012 from an Execute's Bind...) name no statement:
     * looked at in place, and passed on untouched. */
    const uint8_t *msg = s->sbuf->data + s->sbuf->parsed;
    char pgw_name[24] = "", quoted[32] = "";
    if (h->stmt)
        snprintf(pgw_name, sizeof(pgw_name), "%s", h->stmt->name);
    else if (own)
        snprintf(pgw_name, sizeof(pgw_name), "PGW_%llu", (unsigned long long)h->close_id);
    if (*pgw_name)
        snprintf(quoted, sizeof(quoted), "\"%s\"", pgw_name);
    bool named = *quoted && memmem(msg, *total, quoted, strlen(quoted));
    if (!named && !(h->dup && error_has_field(msg, *total, 'W')))
        return true;
    const char *cname = NULL;
    if (named) {
        cname = h->bname;
        if (!*cname) {                /* a long name: the client's for it now, if any */
            cname = NULL;
            const struct ps_stmt *mine = h->named ? h->named : h->stmt;
            HMAP_WALK(it, s->ps_client ? &s->ps_client->map : NULL) {
                struct ps_client_name *e = pgw_container_of(it.node, struct ps_client_name, hnode);
                if (e->stmt == mine) {
                    cname = names_shown(e->name);
                    break;
                }
            }
        }
    }
    struct pgw_wbuf w;
    pgw_wbuf_init(&w);
    bool ok = !error_rewrite(msg, *total, pgw_name, cname, h->dup, &w) ||
              error_replace(s, total, &w);
    pgw_wbuf_deinit(&w);
    return ok;
}

bool pgw_ps_backend(struct pgw_session *s, char type, const uint8_t *msg, uint32_t total)
{
    struct ps_queue *q = s->ps_queue;
    if (q && type == PGW_BE_READY) {
        if (q->maybe_ext)
            q->copy_zs++;
        if (q->probe_z) {
            q->probe_z = false;          /* the probe's (any one: they are alike) */
            return true;
        }
    }
    maybe_resolve(s, type);
    struct qent *h = q_head(s);
    if (!h)
        return false;
    if (h->dealloc_cc && (type == PGW_BE_COMMAND_COMPLETE || type == PGW_BE_ERROR ||
                          type == PGW_BE_READY))
        query_dealloc_reply(s, h, type);
    if (type == PGW_BE_COPY_IN || type == PGW_BE_COPY_BOTH) {
        copy_started(s, type == PGW_BE_COPY_IN);
        return false;
    }
    if (type == PGW_BE_COMMAND_COMPLETE && s->ps_queue->copy_run && copy_done(s))
        return true;                             /* the client gets copy_refused's */
    if (type == PGW_BE_ERROR && s->ps_queue->copy_run)
        copy_failed(s, msg, total);
    if (type == PGW_BE_ERROR || type == PGW_BE_READY)
        s->ps_queue->copy_run = false;   /* the COPY is over */
    if (type == PGW_BE_ERROR) {
        bool probe = h->probe;
        on_error(s, msg, total);
        if (probe)
            q->probe = PROBE_NONE;       /* skipping again (probe_skip_send) */
        return probe;
    }
    if (type == PGW_BE_READY) {
        /* Everything up to the Sync (or Query) it answers is done. */
        while ((h = q_head(s))) {
            char t = h->type;
            q_pop(s);
            if (t == PGW_FE_SYNC || t == PGW_FE_QUERY || t == PGW_FE_FUNCTION_CALL)
                break;
        }
        return false;
    }
    if ((h->learn || h->check) && msg) {
        /* What inject_describe or check_describe asked: kept, and not the
         * client's. */
        struct ps_stmt *st = h->stmt;
        if (type == 't' && h->learn && total >= PGW_MSG_HDR + 2 && !st->pdesc &&
            (st->pdesc = malloc(total))) {
            memcpy(st->pdesc, msg, total);
            st->pdesc_len = total;
            st->nparams = pgw_get_u16(msg + PGW_MSG_HDR);
            pin_types(st);
            return true;
        }
        if (type == PGW_BE_ROW_DESC || type == 'n') {
            if (h->learn) {
                st->rows = type == PGW_BE_ROW_DESC;
                st->described = st->pdesc != NULL;
            }
            shape_seen(s, h, row_shape(type, msg, total));
            q_pop(s);
            return true;
        }
        return type == 't';
    }
    if (type == PGW_BE_COMMAND_COMPLETE && msg && total > 5 && msg[total - 1] == '\0' &&
        (strcmp((const char *)msg + 5, "DISCARD ALL") == 0 ||
         strcmp((const char *)msg + 5, "DEALLOCATE ALL") == 0))
        on_discard(s);
    if (!completes(h->type, type))
        return false;
    if (h->type == PGW_FE_PARSE && h->stmt && h->kind != Q_FAKE && !h->dealloc)
        h->stmt->parsed_ok = true;       /* prepared: pgw_ps_parse_alone may answer it */
    if (h->unnamed_gen && h->unnamed_gen == s->ps_unnamed_gen) {
        s->ps_unnamed_ok = true;         /* the server took it: the client's (unnamed_save) */
        if (h->unnamed_inject && s->server) {
            s->server->user_unnamed = s->id;
            s->server->user_unnamed_gen = h->unnamed_gen;
        }
    }
    if (h->as_is && s->server)
        /* The server took a name pgwharf expected it to refuse (its
         * encoding changed on the way?): a statement there under the
         * client's own name, which the next client must not meet. */
        pgw_server_retire(s->server, "a statement under a client's own name");
    bool drop = h->kind == Q_SWALLOW || h->shape_bind;
    if (h->probe) {
        /* Every ReadyForQuery before it is in (maybe_resolve took the
         * Syncs left for read): the server was skipping if only the
         * probe's came since the COPY's error. */
        q->probe = q->gap && q->maybe_ext && q->copy_zs <= 1 ? PROBE_SKIP : PROBE_NONE;
        q->maybe_ext = false;
        q->probe_ended = true;
    }
    q_pop(s);
    return drop;
}
