/* Sends one UDP datagram to 127.0.0.1:PORT out of interface IFACE (the
 * socket bound to it with SO_BINDTODEVICE, which needs no capability):
 * from a workload, an attempt on the host's loopback through its
 * gateway. Prints "sent" or the errno. Built static by tests/network.rs,
 * so it runs in a busybox root. Usage: loopback IFACE PORT MESSAGE */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: loopback IFACE PORT MESSAGE\n");
        return 2;
    }
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    if (s < 0 || setsockopt(s, SOL_SOCKET, SO_BINDTODEVICE, argv[1], strlen(argv[1]) + 1) != 0) {
        printf("%s\n", strerror(errno));
        return 1;
    }
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (sendto(s, argv[3], strlen(argv[3]), 0, (struct sockaddr *)&to, sizeof to) < 0) {
        printf("%s\n", strerror(errno));
        return 1;
    }
    printf("sent\n");
    return 0;
}
