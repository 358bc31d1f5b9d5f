# OpenBao/Vault Agent for rotator on a host: AppRole auto-auth, the token written to a file that
# rotator reads (vault.auth_method = "token", vault.token_file) and re-reads when it changes.
# Installed as /etc/rotator/vault-agent.hcl and run by rotator-vault-agent.service:
#   bao agent -config=/etc/rotator/vault-agent.hcl        # or: vault agent -config=...
#
# Why: an AppRole secret_id expires (24h by default), and a rotator that logs in itself on every
# nightly run fails on the second night. The agent logs in once with the secret_id and then
# renews its token for as long as it runs; `rotator vault-setup --agent` makes the role issue
# periodic tokens (token_period 1h, no max TTL) so renewal never runs out. The secret_id only
# has to be valid when the agent (re)starts: deliver a fresh one before restarting it.

vault {
  address = "https://vault.example.com:8200"
  # ca_cert = "/etc/rotator/vault-ca.pem"     # a private CA
}

auto_auth {
  method "approle" {
    mount_path = "auth/approle"
    config = {
      role_id_file_path   = "/etc/rotator/vault-role-id"
      # systemd LoadCredential= puts the secret_id here; the credential directory is read-only,
      # so the agent keeps the file (it re-reads it to log in again after a restart).
      secret_id_file_path                 = "/run/credentials/rotator-vault-agent.service/vault-secret-id"
      remove_secret_id_file_after_reading = false
    }
  }

  # Readable by rotator's services only: they run as the same dynamic user "rotator".
  sink "file" {
    config = {
      path = "/run/rotator-vault-agent/token"
      mode = 0640
    }
  }
}
