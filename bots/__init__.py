"""Chat bots: a shared conversation core plus Slack, Telegram and Mattermost."""
