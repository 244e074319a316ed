-- MLT-01: several messages per connection, one refused at MAIL; forged
-- Authentication-Results removed (MLT-04)
dofile(os.getenv("MILTER_LUA") .. "/common.lua")
conn = open()
mt.helo(conn, "client.test")
expect(conn, SMFIR_CONTINUE, "helo")
for i = 1, 3 do
	mt.mailfrom(conn, "<a" .. i .. "@good.test>")
	expect(conn, SMFIR_CONTINUE, "mail " .. i)
	mt.rcptto(conn, "<u@example.org>")
	expect(conn, SMFIR_CONTINUE, "rcpt " .. i)
	message(conn, "message " .. i)
	if not mt.eom_check(conn, MT_HDRINSERT, "X-Moat") then error("no X-Moat " .. i) end
end
mt.mailfrom(conn, "<x@bad.test>")
expect(conn, SMFIR_REPLYCODE, "bad sender")
mt.mailfrom(conn, "<a@good.test>")
expect(conn, SMFIR_CONTINUE, "mail after refusal")
mt.rcptto(conn, "<u@example.org>")
expect(conn, SMFIR_CONTINUE, "rcpt after refusal")
mt.header(conn, "Authentication-Results", "mx.moat.test; spf=pass")
mt.header(conn, "Authentication-Results", "elsewhere.test; spf=fail")
mt.header(conn, "Authentication-Results", " mx.moat.test ; dkim=pass")
message(conn, "forged")
if not mt.eom_check(conn, MT_HDRDELETE, "Authentication-Results") then error("forged A-R kept") end
mt.disconnect(conn)
