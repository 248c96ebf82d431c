/* The users of the proxy listeners: a file of `user:password` lines
 * (`#` comments and blank lines ignored). A password that starts with `$`
 * is a crypt(3) hash (yescrypt `$y$`, SHA-512 `$6$`, SHA-256 `$5$`,
 * bcrypt `$2b$`: `mkpasswd` makes them); anything else is compared as it
 * is. */
#ifndef WGMITM_LISTEN_USERS_H
#define WGMITM_LISTEN_USERS_H

#include <stdbool.h>
#include <stddef.h>

#define USERS_NAME_MAX 255
#define USERS_MAX 10000

struct users;

/* NULL with a message naming the file and line in err[0..errlen). */
struct users *users_load(const char *path, char *err, size_t errlen)
	__attribute__((warn_unused_result));
void users_free(struct users *u);
size_t users_count(const struct users *u);

/* true when `user` is listed with `pass`. Plain passwords compare in
 * constant time for equal lengths. */
bool users_check(const struct users *u, const char *user, const char *pass);
/* Whether the file names this user (whatever the password). */
bool users_has(const struct users *u, const char *user);

#endif
