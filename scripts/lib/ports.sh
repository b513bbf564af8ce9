# ports.sh: sourced (from the repository root) by the scripts and tests that start services.
#   jb_free_base_port    prints a base port P with P..P+79 free on 127.0.0.1, chosen at
#                        random in 20000-32000: below the kernel's ephemeral range
#                        (32768-60999 by default), so that a port freed by a restarting
#                        instance is not taken meanwhile by some outgoing connection.
jb_free_base_port() {
    python3 -c 'import socket, random
while True:
    p = random.randint(20000, 32000)
    try:
        ss = []
        for i in range(80):
            s = socket.socket(); s.bind(("127.0.0.1", p + i)); ss.append(s)
        print(p); break
    except OSError:
        pass'
}
