# Policy "rotator-events": what `rotator serve` needs to receive Vault Enterprise event
# notifications (Vault 1.16 or later; OpenBao has no event subscriptions and refuses the
# `subscribe` capability). Attach it next to "rotator": `rotator vault-setup --events` writes it
# and adds it to the rotator roles.
#
# serve subscribes to kv-v2/data-write and kv-v2/data-patch with a filter on data_path (Vault
# sends only the paths below), and on Vault Enterprise 2.0+ to lease/expired and lease/revoked.
# Keep serve.event_types and this policy in step.
#
# Template: `rotator vault-setup` replaces {kv_mount}, {trigger_path} (serve.trigger_path),
# {vnc_path} and {leases_path} (a sibling of vnc_path). By hand:
#   sed -e 's|{kv_mount}|secret|g' -e 's|{trigger_path}|ehpc/trigger|g' \
#       -e 's|{vnc_path}|ehpc/vnc|g' -e 's|{leases_path}|ehpc/leases|g' rotator-events.hcl \
#     | vault policy write rotator-events -

# Open the event streams (the WebSocket at sys/events/subscribe/<event type>).
path "sys/events/subscribe/kv-v2/data-write" {
  capabilities = ["read"]
}
path "sys/events/subscribe/kv-v2/data-patch" {
  capabilities = ["read"]
}
path "sys/events/subscribe/lease/expired" {
  capabilities = ["read"]
}
path "sys/events/subscribe/lease/revoked" {
  capabilities = ["read"]
}

# Vault delivers an event only when the subscriber may list and subscribe to the path the event
# is about, for that event type:
# a write to the trigger path asks for a rotation,
path "{kv_mount}/data/{trigger_path}/*" {
  capabilities = ["list", "subscribe"]
  subscribe_event_types = ["kv-v2/data-write", "kv-v2/data-patch"]
}
# a write to a lease document (a checkout or check-in on another replica) reconciles leases now,
path "{kv_mount}/data/{leases_path}/*" {
  capabilities = ["list", "subscribe"]
  subscribe_event_types = ["kv-v2/data-write", "kv-v2/data-patch"]
}
# a write to a VNC secret (a rotation by another replica, a person's edit) re-reads its due time.
path "{kv_mount}/data/{vnc_path}/*" {
  capabilities = ["list", "subscribe"]
  subscribe_event_types = ["kv-v2/data-write", "kv-v2/data-patch"]
}

# Lease events (Vault Enterprise 2.0+) are delivered for the path of the secret that issued the
# lease; rotator rotates a known cluster id named in it. To use them, grant the issuing mount in
# a policy of your own, e.g.
#   path "<mount>/creds/*" { capabilities = ["list", "subscribe"]
#                            subscribe_event_types = ["lease/expired", "lease/revoked"] }
