//! `aos user`: the users of a tenant, and the system administrators.

use aos_auth::password::{self, HashParams};
use aos_storage::Storage;
use aos_storage::repo::users::{self, NewUser};
use aos_storage::repo::{audit, roles};
use clap::Subcommand;

use super::{cli_event, new_password, scope};

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create a user of a tenant (or, without --tenant, a system administrator). The password
    /// is read from the first line of standard input with --password-stdin; otherwise one is
    /// generated and printed once.
    Add {
        login: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        email: Option<String>,
        /// Entity (of the tenant) the user is bound to.
        #[arg(long)]
        entity: Option<String>,
        /// A role to give the user (repeatable): system administrator, tenant administrator,
        /// operator, viewer, customer, or a role of the tenant.
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
        #[arg(long)]
        password_stdin: bool,
    },
    /// List the users of a tenant (or, without --tenant, the system administrators).
    List {
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Set a user's password (from standard input with --password-stdin, else generated).
    Passwd {
        login: String,
        #[arg(long)]
        password_stdin: bool,
    },
}

pub async fn users(
    storage: &Storage,
    command: UserCommand,
    hashing: HashParams,
) -> anyhow::Result<()> {
    match command {
        UserCommand::Add {
            login,
            name,
            tenant,
            email,
            entity,
            roles,
            password_stdin,
        } => {
            let (password, generated) = new_password(password_stdin)?;
            let new = NewUser {
                name: name.unwrap_or_else(|| login.clone()),
                login: login.clone(),
                email,
                entity,
                roles,
                password_hash: password::hash_password(&password, hashing)?,
            };
            let (user, tenant_id) = match &tenant {
                Some(t) => {
                    let scope = scope(storage, t).await?;
                    (
                        users::create(storage, scope, new).await?,
                        Some(scope.tenant),
                    )
                }
                None => (users::create_platform(storage, new).await?, None),
            };
            audit::record(storage, cli_event(tenant_id, "user.create", "user", &login)).await?;
            println!("user `{}` created", user.login);
            if generated {
                println!("password: {password}  (shown once: keep it now)");
            }
        }
        UserCommand::List { tenant } => {
            let list = match &tenant {
                Some(t) => users::list(storage, scope(storage, t).await?).await?,
                None => users::list_platform(storage).await?,
            };
            println!("{:<24} {:<32} {:<32} roles", "login", "name", "email");
            for u in list {
                let roles: Vec<String> = roles::of_user(storage, u.id)
                    .await?
                    .into_iter()
                    .map(|r| r.name)
                    .collect();
                println!(
                    "{:<24} {:<32} {:<32} {}",
                    u.login,
                    u.name,
                    u.email.unwrap_or_default(),
                    roles.join(", ")
                );
            }
        }
        UserCommand::Passwd {
            login,
            password_stdin,
        } => {
            let (password, generated) = new_password(password_stdin)?;
            let hash = password::hash_password(&password, hashing)?;
            let user = users::by_login(storage, &login).await?;
            users::set_password(storage, None, &login, hash).await?;
            audit::record(
                storage,
                cli_event(user.tenant_id, "user.password", "user", &login),
            )
            .await?;
            println!("password of `{login}` changed");
            if generated {
                println!("password: {password}  (shown once: keep it now)");
            }
        }
    }
    Ok(())
}
