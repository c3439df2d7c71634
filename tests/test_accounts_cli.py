import sqlalchemy as sa

from eldercare.accounts import User


def test_create_user_from_the_command_line(app, db_session):
    runner = app.test_cli_runner()
    result = runner.invoke(
        args=["accounts", "create-user", "New.Clerk", "--role", "bureau_officer", "--name", "新"],
        input="a-long-password\na-long-password\n",
    )
    assert result.exit_code == 0, result.output
    user = db_session.scalar(sa.select(User).where(User.username == "new.clerk"))
    assert user.roles == {"bureau_officer"} and user.check_password("a-long-password")


def test_short_password_and_taken_name_are_refused(app, db_session):
    runner = app.test_cli_runner()
    short = runner.invoke(
        args=["accounts", "create-user", "x1y", "--role", "auditor"], input="short\nshort\n"
    )
    assert short.exit_code != 0 and "password" in short.output
    args = ["accounts", "create-user", "dup", "--role", "auditor"]
    assert runner.invoke(args=args, input="a-long-password\na-long-password\n").exit_code == 0
    again = runner.invoke(args=args, input="a-long-password\na-long-password\n")
    assert again.exit_code != 0
    assert db_session.scalar(sa.select(sa.func.count()).where(User.username == "dup")) == 1
