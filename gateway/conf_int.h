/*
 * conf_int.h - internals shared by conf.c, conf_schema.c and conf_secret.c.
 * Not for other modules: they use conf.h.
 */
#ifndef POPGATE_CONF_INT_H
#define POPGATE_CONF_INT_H

#include <confuse.h>

/* conf_schema.c: a libconfuse handle on the option tables (cfg_init), and
 * the validators to set on it */
cfg_t *conf_schema_init(void);
void conf_set_validators(cfg_t *cfg);

/* the names an enumerated option accepts, in enum order, NULL-terminated */
extern const char *const conf_auth_names[];
extern const char *const conf_oversize_names[];
extern const char *const conf_dedupe_names[];
extern const char *const conf_bounce_names[];
extern const char *const conf_envhdr_names[];
extern const char *const conf_tls_names[];
extern const char *const conf_smtp_tls_names[];
extern const char *const conf_loglevel_names[];
extern const char *const conf_oauth2_provider_names[];
extern const char *const conf_oauth2_flow_names[];
/* conf_name_index - v's index in names (case-insensitive), -1 if absent */
int conf_name_index(const char *const *names, const char *v);
/* conf_has_control - any octet below 0x20, or DEL */
int conf_has_control(const char *s);

/* conf_secret.c: the file exists, is regular and not group/other
 * accessible; else -1 and *why_r (allocated) says why */
int conf_check_secret_file(const char *path, char **why_r);

#endif
