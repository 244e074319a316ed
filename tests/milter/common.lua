-- shared by the moat-milter miltertest scripts (loaded with dofile)
sock = os.getenv("MILTER_SOCK") or "inet:8891@127.0.0.1"
dir = os.getenv("MILTER_LUA") or "."

function expect(conn, want, what)
	local r = mt.getreply(conn)
	if r ~= want then
		error(what .. ": reply " .. tostring(r) .. ", wanted " .. tostring(want))
	end
end

function open(ip)
	local conn = mt.connect(sock, 20, 0.1)
	if conn == nil then error("cannot connect to " .. sock) end
	if mt.conninfo(conn, "client.test", ip or "127.0.0.1") ~= nil then error("conninfo") end
	expect(conn, SMFIR_CONTINUE, "connect")
	return conn
end

function message(conn, subject)
	mt.header(conn, "From", "<a@good.test>")
	mt.header(conn, "Subject", subject)
	mt.eoh(conn)
	expect(conn, SMFIR_CONTINUE, "eoh")
	mt.bodystring(conn, "hello\r\n")
	expect(conn, SMFIR_CONTINUE, "body")
	mt.eom(conn)
	expect(conn, SMFIR_CONTINUE, "eom")
end
