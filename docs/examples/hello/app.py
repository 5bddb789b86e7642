print("Hello, Containers!")
