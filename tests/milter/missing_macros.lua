-- MLT-05: no client address (unknown family), no HELO, no {i}, no
-- {auth_authen}; then {auth_authen} given: the login counts
dofile(os.getenv("MILTER_LUA") .. "/common.lua")
conn = open("unspec")
mt.mailfrom(conn, "<a@good.test>")
expect(conn, SMFIR_CONTINUE, "mail without helo")
mt.rcptto(conn, "<u@example.org>")
expect(conn, SMFIR_CONTINUE, "rcpt")
message(conn, "no macros")
if mt.eom_check(conn, MT_HDRINSERT, "X-Moat-Login") then error("a login out of nothing") end
mt.macro(conn, SMFIC_MAIL, "{auth_authen}", "alice", "i", "ABC123")
mt.mailfrom(conn, "<alice@example.org>", "SIZE=100")
expect(conn, SMFIR_CONTINUE, "mail with login")
mt.rcptto(conn, "<u@example.org>")
expect(conn, SMFIR_CONTINUE, "rcpt 2")
message(conn, "with login")
if not mt.eom_check(conn, MT_HDRINSERT, "X-Moat-Login") then error("no X-Moat-Login") end
-- odd arguments: an empty sender, a recipient without brackets
mt.mailfrom(conn, "<>")
expect(conn, SMFIR_CONTINUE, "null sender")
mt.rcptto(conn, "u@example.org")
expect(conn, SMFIR_CONTINUE, "rcpt without brackets")
message(conn, "odd")
mt.disconnect(conn)
