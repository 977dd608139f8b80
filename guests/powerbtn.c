/*
 * powerbtn: the test initramfs's ACPI power button handler.
 *
 * Linux's ACPI button driver only reports KEY_POWER on an input device;
 * shutting down is up to user space. powerbtn opens every
 * /dev/input/event* that can report KEY_POWER and then forks: the parent
 * exits only once the child is listening, so /init can announce that the
 * guest is ready knowing that a press will be seen (busybox acpid gives no
 * such signal). On a press the child syncs, writing back the page cache as
 * a real shutdown would, and powers off.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/input.h>
#include <poll.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/reboot.h>
#include <unistd.h>

#define MAX_DEVICES 32
#define LONG_BITS (8 * sizeof(long))

static int reports_power_key(int fd)
{
	unsigned long keys[KEY_MAX / LONG_BITS + 1] = {0};

	if (ioctl(fd, EVIOCGBIT(EV_KEY, sizeof(keys)), keys) < 0)
		return 0;
	return (keys[KEY_POWER / LONG_BITS] >> (KEY_POWER % LONG_BITS)) & 1;
}

int main(void)
{
	struct pollfd fds[MAX_DEVICES];
	int n = 0;

	for (int i = 0; i < MAX_DEVICES; i++) {
		char path[32];
		snprintf(path, sizeof(path), "/dev/input/event%d", i);
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		if (!reports_power_key(fd)) {
			close(fd);
			continue;
		}
		fds[n].fd = fd;
		fds[n].events = POLLIN;
		n++;
	}
	if (n == 0) {
		fprintf(stderr, "powerbtn: no input device reports KEY_POWER: the power button is ignored\n");
		return 1;
	}
	pid_t pid = fork();
	if (pid < 0) {
		perror("powerbtn: fork");
		return 1;
	}
	if (pid > 0)
		return 0;
	setsid();
	for (;;) {
		if (poll(fds, n, -1) < 0) {
			if (errno == EINTR)
				continue;
			perror("powerbtn: poll");
			return 1;
		}
		for (int i = 0; i < n; i++) {
			struct input_event ev[16];
			if (!(fds[i].revents & POLLIN))
				continue;
			ssize_t got = read(fds[i].fd, ev, sizeof(ev));
			for (ssize_t j = 0; got > 0 && j < got / (ssize_t)sizeof(ev[0]); j++) {
				if (ev[j].type != EV_KEY || ev[j].code != KEY_POWER || ev[j].value != 1)
					continue;
				printf("govmm init: power button pressed: syncing and powering off\n");
				fflush(stdout);
				sync();
				reboot(RB_POWER_OFF);
				perror("powerbtn: reboot");
				return 1;
			}
		}
	}
}
