# Policy "rotator-events": what `rotator serve` needs to receive Vault Enterprise event
# notifications (Vault 1.16 or later; OpenBao has no event subscriptions and refuses the
# `subscribe` capability). Attach it next to "rotator": `rotator vault-setup --events` writes it
# and adds it to the rotator roles.
#
# Template: `rotator vault-setup` replaces {kv_mount} and {trigger_path} (serve.trigger_path).
# By hand:
#   sed -e 's|{kv_mount}|secret|g' -e 's|{trigger_path}|ehpc/trigger|g' rotator-events.hcl \
#     | vault policy write rotator-events -

# Open the event stream (the WebSocket at sys/events/subscribe/<event type>).
path "sys/events/subscribe/*" {
  capabilities = ["read"]
}

# Vault delivers an event only when the subscriber may list and subscribe to the path the event
# is about, for that event type: here the KV writes and deletes that ask for a rotation.
path "{kv_mount}/data/{trigger_path}/*" {
  capabilities = ["list", "subscribe"]
  subscribe_event_types = ["kv*"]
}
path "{kv_mount}/metadata/{trigger_path}/*" {
  capabilities = ["list", "subscribe"]
  subscribe_event_types = ["kv*"]
}
