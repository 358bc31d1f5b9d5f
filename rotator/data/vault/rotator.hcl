# Policy "rotator": exactly what the VNC password rotator needs, nothing else.
#
# Template: `rotator vault-setup` replaces {kv_mount}, {root_path}, {vnc_path}, {runs_path},
# {pending_path} and {password_policy} with the configured values (defaults: secret, ehpc/root,
# ehpc/vnc, ehpc/runs, ehpc/pending, ehpc-vnc). To apply it by hand:
#   sed -e 's|{kv_mount}|secret|g' -e 's|{root_path}|ehpc/root|g' -e 's|{vnc_path}|ehpc/vnc|g' \
#       -e 's|{runs_path}|ehpc/runs|g' -e 's|{pending_path}|ehpc/pending|g' \
#       -e 's|{password_policy}|ehpc-vnc|g' rotator.hcl \
#     | bao policy write rotator -

# Input: the clusters' root credentials. Read-only; listing them is the default inventory.
path "{kv_mount}/data/{root_path}/*" {
  capabilities = ["read"]
}
path "{kv_mount}/metadata/{root_path}" {
  capabilities = ["list"]
}
path "{kv_mount}/metadata/{root_path}/*" {
  capabilities = ["list"]
}

# Output: the VNC passwords. create/update are check-and-set writes of new versions; the
# metadata carries the rotation status (patch merges it; create when a cluster failed before
# its first password was ever written).
path "{kv_mount}/data/{vnc_path}/*" {
  capabilities = ["create", "read", "update"]
}
path "{kv_mount}/metadata/{vnc_path}" {
  capabilities = ["list"]
}
path "{kv_mount}/metadata/{vnc_path}/*" {
  capabilities = ["create", "read", "update", "patch", "list"]
}

# The rotation in flight (new password and claim), private to rotator: check-and-set writes
# only, never deleted (a commit marks it as done). Listed by `rotator status` and serve's
# pending scan, to find a password a killed run left in flight.
path "{kv_mount}/data/{pending_path}/*" {
  capabilities = ["create", "read", "update"]
}
path "{kv_mount}/metadata/{pending_path}" {
  capabilities = ["list"]
}

# Run reports: outcome per cluster, never a secret. Listing and metadata delete prune all but
# the newest vault.runs_keep.
path "{kv_mount}/data/{runs_path}/*" {
  capabilities = ["create", "read", "update"]
}
path "{kv_mount}/metadata/{runs_path}" {
  capabilities = ["list"]
}
path "{kv_mount}/metadata/{runs_path}/*" {
  capabilities = ["delete"]
}

# Check-out leases: one record per cluster, check-and-set writes by rotator only.
path "{kv_mount}/data/{leases_path}/*" {
  capabilities = ["create", "read", "update"]
}
path "{kv_mount}/metadata/{leases_path}" {
  capabilities = ["list"]
}
path "{kv_mount}/metadata/{leases_path}/*" {
  capabilities = ["list"]
}

# New passwords from the password policy (generate is a GET, hence "read").
path "sys/policies/password/{password_policy}/generate" {
  capabilities = ["read"]
}

# Keep the own token alive on long runs.
path "auth/token/renew-self" {
  capabilities = ["update"]
}
path "auth/token/lookup-self" {
  capabilities = ["read"]
}
