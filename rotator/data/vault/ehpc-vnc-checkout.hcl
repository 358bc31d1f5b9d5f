# Policy "ehpc-vnc-checkout": for people who check VNC passwords out with rotator, e.g.
#   rotator checkout ehpc-hz-abc123 --ttl 2h --reason "debug job 4711"
# rotator asks Vault (sys/capabilities-self, with the person's own token) what this token may do
# on a cluster's *marker* path; nothing is stored there:
#   read    on {kv_mount}/data/{checkout_path}/<ClusterId>: may check that cluster out, and renew
#           or check in their own leases;
#   update  there as well: may renew or check in anyone's lease (team leads, on-call).
# Narrow it per cluster with a glob, e.g. "{kv_mount}/data/{checkout_path}/ehpc-hz-*".
# The password is read with the person's token when it may read the VNC secret (add the
# ehpc-vnc-reader policy; Vault's audit log then names them), otherwise with rotator's; the
# lease in {kv_mount}/{leases_path}/<ClusterId> records the holder either way.
#
# Template: `rotator vault-setup` replaces {kv_mount}, {checkout_path} and {leases_path}
# (defaults: secret, ehpc/checkout, ehpc/leases: siblings of vault.vnc_path).

path "{kv_mount}/data/{checkout_path}/*" {
  capabilities = ["read"]
}

# Who am I, and what may I do (both are in Vault's default policy too).
path "auth/token/lookup-self" {
  capabilities = ["read"]
}
path "sys/capabilities-self" {
  capabilities = ["update"]
}
