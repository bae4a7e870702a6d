#!/bin/bash
# t_admin.sh - queue administration and retention against real servers:
# queue --json, show, hold, requeue (one, --held, --all), delete --yes,
# flush (deferred mail made due and relayed), a flush racing a relay never
# sends one message twice, keep_sent_days keeps sent files for audit and
# recovery purges them when their time is up, and nothing unsent is purged.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/test/lib/common.sh"
require_env
require_popgate

one_mailbox adm 'adm-pw'
mail_gen --maildir "$(maildir_of adm)" --expected "$TESTDIR/exp" --count 6 --prefix adm \
	--shapes simple >/dev/null || bail_out "mkmail failed"
{
	conf_base "$SPOOL"
	echo "keep_sent_days = 2"
	conf_account adm server localhost port "$POP3_PORT" tls starttls ca_file "$TESTDIR/pop/ca.pem" \
		user adm password_file "$TESTDIR/pass" deliver_to "$RCPT"
} >"$CONF"
state_of() { spool_sql "$SPOOL" "select state from messages where id='$1'"; }

pg "$LOG" -c "$CONF" poll --once
mapfile -t ids < <(spool_sql "$SPOOL" "select id from messages order by rowid")
is "${#ids[@]}" 6 "6 messages spooled" || note "$LOG"

# ---- queue --json ---------------------------------------------------------
pg "$LOG" -c "$CONF" queue --json >"$TESTDIR/q.json"
is "$PG_RC" 0 "queue --json exits 0"
is "$("$PYTHON" -c 'import json,sys; q=json.load(open(sys.argv[1])); print(len(q), q[0]["state"], q[0]["recipients"][0]["address"], q[0]["id"])' "$TESTDIR/q.json")" \
	"6 queued $RCPT ${ids[0]}" "queue --json is valid JSON with state, recipients and id"

# ---- hold, show, delete ---------------------------------------------------
pg "$LOG" -c "$CONF" hold "${ids[0]}" >/dev/null
is "$PG_RC $(state_of "${ids[0]}")" "0 held" "hold: the message is held"
pg "$LOG" -c "$CONF" queue --state held >"$TESTDIR/q.held"
like "$(cat "$TESTDIR/q.held")" "${ids[0]} .*held" "queue --state held lists it"
pg "$LOG" -c "$CONF" show "$(echo "${ids[0]}" | tr 'A-F' 'a-f')" >"$TESTDIR/show"
show=$(cat "$TESTDIR/show")
is "$PG_RC" 0 "show exits 0 (lower-case id accepted)"
like "$show" "RCPT TO:<$RCPT>" "show: the envelope recipient"
like "$show" "MAIL FROM:<" "show: the envelope sender"
like "$show" "queued +fetched" "show: history has the fetch"
like "$show" "held +held by the operator" "show: history has the hold"
like "$show" "X-Test-Id: " "show: the headers of the message"
like "$show" "Received: from localhost" "show: popgate's own Received header"
pg "$LOG" -c "$CONF" show 0000000000000000 >/dev/null
is "$PG_RC" 65 "show of an unknown id exits 65"
pg "$LOG" -c "$CONF" delete "${ids[1]}" >/dev/null
is "$PG_RC" 64 "delete without --yes is refused"
deleted_tid=$(spool_msg "$SPOOL" "${ids[1]}" | sed -n 's/^X-Test-Id: \([^[:space:]]*\).*/\1/p')
ok "[ -n '$deleted_tid' ]" "show --raw / the stored message carries its test id"
pg "$LOG" -c "$CONF" show --raw "${ids[1]}" >"$TESTDIR/raw"
is "$PG_RC" 0 "show --raw exits 0"
ok "cmp -s '$TESTDIR/raw' <(spool_msg '$SPOOL' '${ids[1]}')" \
	"show --raw writes the stored message byte for byte"
is "$(head -c 15 "$TESTDIR/raw")" "Received: from " "show --raw starts with popgate's Received header"
is "$(sha256sum <"$TESTDIR/raw" | cut -d' ' -f1)" \
	"$(spool_sql "$SPOOL" "select digest from messages where id='${ids[1]}'")" \
	"show --raw: the bytes match the index digest"
pg "$LOG" -c "$CONF" show --raw 0000000000000000 >/dev/null
is "$PG_RC" 65 "show --raw of an unknown id exits 65"
pg "$LOG" -c "$CONF" delete "${ids[1]}" --yes >/dev/null
is "$PG_RC $(spool_sql "$SPOOL" "select count(*) from messages where id='${ids[1]}'")" "0 0" \
	"delete --yes removes the row"
ok "[ ! -e '$SPOOL/msg/${ids[1]}' ]" "delete --yes leaves no file"
is "$(spool_sql "$SPOOL" "select count(*) from bodies where msg_id='${ids[1]}'")" 0 \
	"delete --yes removes the stored body"
like "$(cat "$LOG")" "id=${ids[1]} status=deleted by=operator" "the deletion is logged"

# ---- relay: held stays, sent files are kept for audit ----------------------
spool_sql "$SPOOL" "update messages set state='deferred', next_attempt=strftime('%s','now')+3600 where id='${ids[2]}'"
pg "$LOG" -c "$CONF" relay --once
is "$(sink_count)" 3 "relay sends the 3 due messages (not held, deferred, deleted)"
is "$(state_of "${ids[0]}") $(state_of "${ids[2]}")" "held deferred" "held and deferred stay"
is "$(spool_count_stored "$SPOOL")" 5 "keep_sent_days: the 3 sent messages are kept with the 2 unsent"
pg "$LOG" -c "$CONF" requeue "${ids[3]}" >/dev/null
is "$PG_RC" 65 "requeue of a sent message is refused (exit 65)"

# ---- flush: deferred made due; requeue --held --------------------------------
pg "$LOG" -c "$CONF" flush
is "$PG_RC $(state_of "${ids[2]}") $(sink_count)" "0 sent 4" "flush relays the deferred message now"
pg "$LOG" -c "$CONF" requeue --held >"$TESTDIR/rq"
like "$(cat "$TESTDIR/rq")" "requeued 1 message" "requeue --held requeues the held one"
pg "$LOG" -c "$CONF" relay --once
is "$(state_of "${ids[0]}") $(sink_count)" "sent 5" "the requeued message is sent"
# the deleted message is the one expected message that never arrives
"$PYTHON" - "$TESTDIR/exp/manifest.json" "$deleted_tid" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
del m[sys.argv[2]]
json.dump(m, open(sys.argv[1], "w"))
EOF
run_checks mail_check --expected "$TESTDIR/exp" --format sink --rcpt "$RCPT" $(sink_files)

# ---- retention ends: recovery purges, nothing unsent is touched --------------
mail_gen --maildir "$(maildir_of adm)" --expected "$TESTDIR/exp2" --count 2 --prefix adm2 \
	--shapes simple >/dev/null
pg "$LOG" -c "$CONF" poll --once
spool_sql "$SPOOL" "update retained set until = 1; update messages set created = 1 where state <> 'sent'"
pg "$LOG" -c "$CONF" queue >/dev/null
is "$(spool_count_stored "$SPOOL")" 2 "expired sent messages are purged; the 2 unsent (however old) stay"
like "$(cat "$LOG")" "sent_purged=5" "the purge is logged"
pg "$LOG" -c "$CONF" requeue --all >/dev/null
is "$PG_RC" 0 "requeue --all exits 0"

# ---- a flush racing a relay: every message once ------------------------------
mail_gen --maildir "$(maildir_of adm)" --expected "$TESTDIR/exp3" --count 300 --prefix adm3 \
	--shapes simple >/dev/null
pg "$LOG" -c "$CONF" poll --once
before=$(sink_files)
pg "$LOG" -c "$CONF" relay --once &
r1=$!
pg "$LOG" -c "$CONF" flush &
r2=$!
wait "$r1" "$r2"
is "$(spool_sql "$SPOOL" "select count(*) from messages where state <> 'sent'")" 0 \
	"relay and flush together sent everything"
mapfile -t new < <(comm -13 <(echo "$before") <(sink_files))
is "${#new[@]}" 302 "302 transactions for 302 messages: no message sent twice"
run_checks mail_check --expected "$TESTDIR/exp3" --format sink --rcpt "$RCPT" \
	$(grep -l 'adm3' "${new[@]}")

done_testing
