"""A lesson: tasks a teacher prepares for classes, the students' chats in them, the teacher's reads and the emergency stop."""
